"""kill -9 of every chain process, one at a time, under a steady load from guests on both paths.

Requests in a fault window fail fast (a 502/503/504, or a refused or reset connection
when the process holding the guest's connection is the one killed), never past the
configured connect timeouts and never a client-side timeout; the service comes back
(respawned, or restarted with the same config) and every guest is served again with no
other step. Faults that touch no request path (dnsmasq, the netagent) fail nothing.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from metastack.lab.chain import child_pids
from metastack.lab.load import Record, wait_until

from .conftest import (
    RESTART_DELAY,
    FaultResult,
    World,
    agent_log,
    configured,
    run_in,
)

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

GATEWAY_5XX = {"502", "503", "504"}
CONNECTION = {"refused", "reset"}
SERVICE_BACK = 15.0  # seconds a respawn or restart may take


def assert_fail_fast(
    world: World, result: FaultResult, window: list[Record], allowed: set[str]
) -> None:
    """Only the allowed kinds of failure, each within the connect timeouts; report on failure."""
    assert window, "no request in the fault window"
    assert set(result.kinds) <= allowed, result
    # Connection errors are answered at once; a dead upstream costs at most a connect.
    bound = float(configured(world, "agent", "upstream_connect_timeout"))
    assert result.longest_failed_s < bound, result


def kill(pid: int) -> None:
    """SIGKILL one process and wait until it is gone (or a zombie nobody reaped yet)."""
    os.kill(pid, signal.SIGKILL)
    gone = wait_until(lambda: not _running(pid), 5.0)
    assert gone is not None, f"pid {pid} survived SIGKILL"


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def test_api_worker_killed_is_respawned(world: World) -> None:
    parent = world.pid("api")
    before = world.workers()
    assert len(before) == 2, before
    victim = before[0]

    def back() -> None:
        def respawned() -> bool:
            now = child_pids(parent)
            return len(now) == 2 and victim not in now

        assert wait_until(respawned, SERVICE_BACK) is not None, "worker not respawned"

    result, window = world.under_fault("api worker", lambda: kill(victim), back)
    assert world.pid("api") == parent
    assert_fail_fast(world, result, window, GATEWAY_5XX)


def test_api_parent_killed_and_restarted(world: World) -> None:
    old = world.pid("api")
    agent = world.pid("agent")

    def inject() -> None:
        kill(old)
        time.sleep(RESTART_DELAY)

    result, window = world.under_fault("api parent", inject, lambda: world.restart("api"))
    assert world.pid("api") != old
    assert len(world.workers()) == 2
    assert world.pid("agent") == agent  # nothing else needed a restart
    assert_fail_fast(world, result, window, GATEWAY_5XX)


def test_agent_killed_and_restarted(world: World) -> None:
    old = world.pid("agent")
    proxy = world.proxy_pid()

    def inject() -> None:
        kill(old)
        time.sleep(RESTART_DELAY)

    result, window = world.under_fault("agent", inject, lambda: world.restart("agent"))
    assert world.pid("agent") != old
    assert world.proxy_pid() == proxy
    assert result.failures > 0, "the guests should have seen the agent gone"
    assert_fail_fast(world, result, window, GATEWAY_5XX)


def test_proxy_killed_is_respawned_by_the_netagent(world: World) -> None:
    old = world.proxy_pid()
    assert old is not None

    def back() -> None:
        def respawned() -> bool:
            new = world.proxy_pid()
            return new is not None and new != old

        assert wait_until(respawned, SERVICE_BACK) is not None, "proxy not respawned"

    result, window = world.under_fault("proxy", lambda: kill(old), back)
    # The guests' connections ended with the process that held them: refused or reset.
    assert_fail_fast(world, result, window, CONNECTION | GATEWAY_5XX)


def test_dnsmasq_killed_is_respawned_and_leases_renew(world: World, tmp_path: Path) -> None:
    guest = world.guests["dhcp"]
    old = world.dnsmasq_pid(guest.network_id)
    assert old is not None

    def back() -> None:
        def respawned() -> bool:
            new = world.dnsmasq_pid(guest.network_id)
            return new is not None and new != old

        assert wait_until(respawned, SERVICE_BACK) is not None, "dnsmasq not respawned"

    result, _ = world.under_fault("dnsmasq", lambda: kill(old), back)
    assert result.failures == 0, result

    # The guest asks the new dnsmasq for its address again (a script that only records the
    # answer, so the guest's interface and its load are left alone).
    lease = tmp_path / "lease"
    recorder = tmp_path / "record.sh"
    recorder.write_text(f'#!/bin/sh\n[ "$1" = bound ] && echo "$ip" > {lease}\nexit 0\n')
    recorder.chmod(0o755)
    address = guest.ip
    done = run_in(
        guest.namespace,
        "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1", "-A", "1",
        "-r", address, "-s", str(recorder),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert lease.read_text().strip() == address


def test_netagent_killed_and_restarted_fails_nothing(world: World) -> None:
    old = world.pid("netagent")
    proxy = world.proxy_pid()
    dnsmasqs = {g.network_id: world.dnsmasq_pid(g.network_id) for g in world.guests.values()}

    def inject() -> None:
        kill(old)
        time.sleep(RESTART_DELAY)

    def back() -> None:
        new = world.restart_netagent()
        assert new != old

    result, _ = world.under_fault("netagent", inject, back)
    assert result.failures == 0, result
    assert world.proxy_pid() == proxy
    assert {n: world.dnsmasq_pid(n) for n in dnsmasqs} == dnsmasqs


def test_agent_started_before_the_api(world: World) -> None:
    """The agent comes up with the API down, answers 503 at once, and serves when the API
    starts, without a restart: its change-feed follower retried until the feed answered."""
    world.assert_steady()
    world.stop("agent")
    world.stop("api")
    log_before = len(agent_log(world))
    agent = world.start("agent")
    agent_up = time.monotonic()
    time.sleep(1.5)
    down_window = [r for r in world.records() if r.started >= agent_up]
    assert len(down_window) > 20
    assert {r.kind for r in down_window} == {"503"}, {r.kind for r in down_window}
    assert max(r.seconds for r in down_window) < 0.5
    assert "change feed unavailable" in agent_log(world)[log_before:]

    api_up = time.monotonic()
    world.start("api")
    end, recovered = world.wait_recovered(api_up, time.monotonic())
    assert world.pid("agent") == agent
    back = wait_until(lambda: "change feed is back" in agent_log(world)[log_before:], 10.0)
    assert back is not None, agent_log(world)[log_before:][-2000:]
    window = [r for r in world.records() if agent_up <= r.started <= end]
    failed = [r for r in window if not r.ok]
    world.results.append(
        FaultResult(
            fault="agent before api",
            requests=len(window),
            failures=len(failed),
            kinds=dict(Counter(r.kind for r in failed)),
            longest_failed_s=max(r.seconds for r in failed),
            back_s=end - api_up,
            recovered_s=recovered,
        )
    )
    assert {r.kind for r in failed} == {"503"}
    assert max(r.seconds for r in failed) < 0.5
