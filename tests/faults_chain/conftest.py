"""The demo's whole chain under a steady load from guests, and the bookkeeping of one fault.

One demo (api with 2 workers, agent, netagent running the proxy and dnsmasq, three
DHCP-booted guests: two routed, one isolated) is shared by the module; each of its
guests runs the lab load generator from inside its namespace for the whole module.
Restarts are done the way an operator's supervisor would: the same config and ports,
through a `Chain` that adopts the demo's generated configs. Everything is removed at the
end, also after a failure, and the removal is checked.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pytest

from metastack.demo import run as demo
from metastack.demo.state import DemoState, Guest, Process
from metastack.lab.chain import Chain, ChainError, child_pids
from metastack.lab.load import GuestLoad, Record
from metastack.netns import dnsmasq
from metastack.netns.apply import list_netns
from support.needs import missing

RATE = 50.0  # requests per second per guest
CONNECTIONS = 4
CLIENT_TIMEOUT = 20.0  # a request still open after this is a hang
LOAD_BOUND = 300.0  # the generators stop by themselves after this, whatever happens
STREAK = 25  # consecutive 200s per guest after the last failure: the load has recovered
RECOVERY_TIMEOUT = 30.0
RESTART_DELAY = 0.5  # what a supervisor waits before restarting a dead service
METASTACK = str(Path(sys.executable).with_name("metastack"))
PATHS = ("/latest/meta-data/instance-id", "/openstack/latest/meta_data.json")

Role = Literal["api", "agent"]


def why_not() -> str | None:
    return missing("the chain under faults", ("ip", "busybox", "dnsmasq"))


@dataclass
class FaultResult:
    """What the guests saw during one fault."""

    fault: str
    requests: int
    failures: int
    kinds: dict[str, int]
    longest_failed_s: float
    back_s: float  # the service running again (respawned or restarted)
    recovered_s: float  # every guest served again, for good

    def row(self) -> str:
        """One line of the report table."""
        kinds = ", ".join(f"{k}x{v}" for k, v in sorted(self.kinds.items())) or "-"
        return (
            f"{self.fault:<22} {self.requests:>8} {self.failures:>8} "
            f"{self.longest_failed_s * 1e3:>10.1f} {self.back_s:>8.2f} "
            f"{self.recovered_s:>9.2f}  {kinds}"
        )


HEADER = (
    f"{'fault':<22} {'requests':>8} {'failures':>8} {'longest ms':>10} "
    f"{'back s':>8} {'recovered':>9}  failure kinds"
)


@dataclass
class World:
    """The running demo, its adopted chain and the guests' loads."""

    workdir: Path
    chain: Chain
    guests: dict[str, Guest]  # "router", "dhcp", "router-b"
    loads: dict[str, GuestLoad] = field(default_factory=dict)
    results: list[FaultResult] = field(default_factory=list)

    # Where things are.

    def state(self) -> DemoState:
        """The demo's record, read fresh (restarts rewrite it)."""
        state = DemoState.load(self.workdir)
        assert state is not None
        return state

    def pid(self, role: str) -> int:
        """The PID of a running demo service (api parent, agent, netagent, proxy)."""
        pid = demo.services(self.state()).get(role)
        assert pid is not None, f"{role} is not running"
        return pid

    def workers(self) -> list[int]:
        """The API parent's forked workers."""
        return child_pids(self.pid("api"))

    def dnsmasq_pid(self, network_id: str) -> int | None:
        """The live dnsmasq of a network, from the netagent's pid file."""
        pidfile = self.workdir / "netagent" / "dhcp" / network_id / "pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if dnsmasq.alive(pid) else None

    def proxy_pid(self) -> int | None:
        """The live proxy the netagent runs, from its pid file."""
        return demo.services(self.state()).get("proxy")

    # Restarts, as a supervisor with the same config would do them.

    def restart(self, role: Role) -> float:
        """Stop what is left of a service (its whole process group) and start it again with
        the same config and ports; seconds until it is ready."""
        started = time.monotonic()
        if self.chain.running(role) is None:
            for process in self.state().processes:
                if process.role == role:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, signal.SIGKILL)
        self.chain.stop_service(role)
        running = self.chain.start_api() if role == "api" else self.chain.start_agent()
        self._record(role, running.pid)
        return time.monotonic() - started

    def stop(self, role: Role) -> None:
        """Stop a service gracefully (SIGTERM, the group after the chain's timeout)."""
        if self.chain.running(role) is None:
            for process in self.state().processes:
                if process.role == role:
                    process.stop()
        self.chain.stop_service(role)

    def start(self, role: Role) -> int:
        """Start a stopped service with the same config; its PID."""
        running = self.chain.start_api() if role == "api" else self.chain.start_agent()
        self._record(role, running.pid)
        return running.pid

    def restart_netagent(self) -> int:
        """`metastack demo restart netagent`; the new netagent's PID."""
        demo_cli("restart", "netagent", workdir=self.workdir)
        return self.pid("netagent")

    def _record(self, role: str, pid: int) -> None:
        state = self.state()
        marker = str(self.chain.config_path("api" if role == "api" else "agent"))
        state.processes = [p for p in state.processes if p.role != role]
        state.processes.append(Process(role, pid, marker))
        state.save()

    # The load.

    def records(self) -> list[Record]:
        """Every request of every guest so far."""
        return [r for load in self.loads.values() for r in load.snapshot()]

    def assert_steady(self, within: float = 10.0) -> None:
        """Every guest got only 200s for its last STREAK requests (waits up to `within`)."""

        def steady() -> bool:
            for load in self.loads.values():
                tail = load.snapshot()[-STREAK:]
                if len(tail) < STREAK or not all(r.ok for r in tail):
                    return False
            return True

        deadline = time.monotonic() + within
        while not steady():
            assert time.monotonic() < deadline, "the load is not steady before the fault"
            time.sleep(0.1)

    def wait_recovered(self, since: float, back: float) -> tuple[float, float]:
        """Wait until every guest has STREAK 200s started after its last failure since
        `since` and after `back`; (end of the wait on the monotonic clock, recovery seconds:
        first lasting 200 after the last failure, 0 when nothing failed)."""
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while True:
            done, end, recovered = True, since, 0.0
            for load in self.loads.values():
                mine = [r for r in load.snapshot() if r.ended >= since]
                failed = [r for r in mine if not r.ok]
                after = max([back, *(r.ended for r in failed)])
                good = [r for r in mine if r.started >= after]
                if len(good) < STREAK or not all(r.ok for r in good):
                    done = False
                    break
                end = max(end, good[STREAK - 1].ended)
                if failed:
                    recovered = max(recovered, good[0].started - since)
            if done:
                return end, recovered
            assert time.monotonic() < deadline, (
                f"the load did not recover within {RECOVERY_TIMEOUT:.0f} s: "
                + self._diagnose(since, back)
            )
            time.sleep(0.1)

    def _diagnose(self, since: float, back: float) -> str:
        lines = [f"back after {back - since:.2f} s"]
        for key, load in self.loads.items():
            mine = [r for r in load.snapshot() if r.ended >= since]
            failed = [r for r in mine if not r.ok]
            kinds = Counter(r.kind for r in mine)
            last = f"{failed[-1].ended - since:.2f}" if failed else "-"
            tail = [f"{r.started - since:.2f}:{r.kind}" for r in mine[-5:]]
            lines.append(f"{key}: {dict(kinds)}, last failure at {last} s, last {tail}")
        return "\n".join(lines)

    def under_fault(
        self, name: str, inject: Callable[[], object], back: Callable[[], object]
    ) -> tuple[FaultResult, list[Record]]:
        """Inject a fault under the steady load, wait for the service and for every guest to
        be served again; what the guests saw from the fault until then."""
        self.assert_steady()
        since = time.monotonic()
        inject()
        back()
        came_back = time.monotonic()
        end, recovered = self.wait_recovered(since, came_back)
        window = [r for r in self.records() if r.ended >= since and r.started <= end]
        failed = [r for r in window if not r.ok]
        result = FaultResult(
            fault=name,
            requests=len(window),
            failures=len(failed),
            kinds=dict(Counter(r.kind for r in failed)),
            longest_failed_s=max((r.seconds for r in failed), default=0.0),
            back_s=came_back - since,
            recovered_s=recovered,
        )
        self.results.append(result)
        return result, window


def demo_cli(*args: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """Run `metastack demo ARGS --workdir WORKDIR`; fails the test when it fails."""
    done = subprocess.run(
        [METASTACK, "demo", *args, "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _searchable_tmp() -> Path:
    """A fresh folder others may traverse: dnsmasq runs as nobody and reads files below it."""
    folder = Path(tempfile.mkdtemp(prefix="ms-faults-"))
    folder.chmod(0o755)
    return folder


def _adopt(state: DemoState) -> Chain:
    """A Chain over the demo's chain folder: same secret, token and ports."""
    folder = Path(state.workdir) / "chain"
    api = tomllib.loads((folder / "api.toml").read_text())["api"]
    chain = Chain(
        folder,
        api_workers=int(api["workers"]),
        secret=str(api["metadata_proxy_shared_secret"]),
        admin_token=state.admin_token,
    )
    chain.control_port = urlsplit(state.control_url).port or 0
    chain.metadata_port = urlsplit(state.metadata_url).port or 0
    return chain


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def _report(world: World) -> None:
    lines = ["", "faults under a steady load from guests", HEADER]
    lines += [result.row() for result in world.results]
    print("\n".join(lines))
    target = os.environ.get("METASTACK_FAULTS_JSON")
    if target:
        Path(target).write_text(
            json.dumps([vars(r) for r in world.results], indent=2) + "\n", encoding="utf-8"
        )


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """The demo with three guests under load; removed (and checked) afterwards."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    workdir = _searchable_tmp() / "state"
    world: World | None = None
    try:
        demo_cli(
            "up", "--instances", "3", "--control-port", "0", "--metadata-port", "0",
            workdir=workdir,
        )  # fmt: skip
        state = DemoState.load(workdir)
        assert state is not None
        assert all(g.cloud_init_ok for g in state.guests), [g.report() for g in state.guests]
        by_path = {"router": state.guests[0], "dhcp": state.guests[1], "router-b": state.guests[2]}
        assert [g.path for g in by_path.values()] == ["router", "dhcp", "router"]
        world = World(workdir, _adopt(state), by_path)
        for key, guest in by_path.items():
            world.loads[key] = GuestLoad(
                guest.namespace,
                rate=RATE,
                connections=CONNECTIONS,
                duration=LOAD_BOUND,
                timeout=CLIENT_TIMEOUT,
                paths=PATHS,
            ).start()
        yield world
    finally:
        errors: list[str] = []
        if world is not None:
            for load in world.loads.values():
                load.stop()
            try:
                world.chain.stop()
            except ChainError as exc:
                errors.append(str(exc))
            _report(world)
        recorded = DemoState.load(workdir)
        demo_cli("down", workdir=workdir)
        if recorded is not None:
            assert [n for n in list_netns() if n.startswith(recorded.prefix)] == []
        assert not workdir.exists()
        assert _processes_mentioning(str(workdir)) == []
        workdir.parent.rmdir()
        assert not errors, errors


def run_in(namespace: str, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command inside a namespace; its completed process (not checked)."""
    return subprocess.run(
        ["ip", "netns", "exec", namespace, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def agent_log(world: World) -> str:
    """The agent's log, every start."""
    return world.chain.log_path("agent").read_text(errors="replace")


def configured(world: World, service: Literal["agent"], key: str) -> Any:
    """A value of the agent's generated config, else the default the agent uses."""
    from metastack.agent.config import load_agent_config

    return getattr(load_agent_config(world.chain.config_path(service)), key)
