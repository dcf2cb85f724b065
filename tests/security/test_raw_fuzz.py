"""Raw-bytes fuzzing of the proxy (from inside a guest) and of the agent's unix socket.

Seeded mutations of valid requests (bounded by count and time; `METASTACK_FUZZ_SECONDS`,
`METASTACK_FUZZ_CASES` and `METASTACK_FUZZ_SEED` widen or vary a run). Every case: no
5xx (the upstream is healthy throughout), an answer or a close within the configured
head deadline, and no other instance's identity; afterwards every process has its PID,
its descriptors back and serves normally, and the store is unchanged.
"""

from __future__ import annotations

import collections
import json
import os
import re
import time

import pytest

from e2e.test_ipv6 import eui64_link_local
from e2e.world import World
from metastack import identity
from security.harness import (
    HEADER_TIMEOUT,
    MD,
    Baseline,
    Outcome,
    exchange,
    leaks,
    recovered,
    revision,
    secrets_of_others,
)
from security.mutate import Mutant, Mutator

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

SECONDS = float(os.environ.get("METASTACK_FUZZ_SECONDS", "10"))  # per target
CASES = int(os.environ.get("METASTACK_FUZZ_CASES", "1200"))  # per target
SEED = int(os.environ.get("METASTACK_FUZZ_SEED", "20261126"))
BATCH = 300
AGENT_HEADER_TIMEOUT = 10.0  # the agent's own head deadline (metastack.agent.server.LIMITS)
_STATUS = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ")


def proxy_corpus() -> list[bytes]:
    """Valid guest requests (none that writes)."""
    host = b"Host: 169.254.169.254\r\n"
    md = MD.encode()
    return [
        b"GET " + md + b" HTTP/1.1\r\n" + host + b"\r\n",
        b"GET /latest/meta-data/instance-id HTTP/1.1\r\n" + host + b"Connection: keep-alive\r\n\r\n"
        b"GET /latest/meta-data/ HTTP/1.1\r\n" + host + b"\r\n",
        b"HEAD " + md + b" HTTP/1.1\r\n" + host + b"\r\n",
        b"POST " + md + b" HTTP/1.1\r\n" + host + b"Content-Length: 5\r\n\r\nhello",
        b"POST " + md + b" HTTP/1.1\r\n" + host
        + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"GET /latest/meta-data/ HTTP/1.0\r\n\r\n",
        b"GET " + md + b" HTTP/1.1\r\n" + host + b"Expect: 100-continue\r\nAccept: */*\r\n\r\n",
        b"GET /openstack/latest/user_data?x=1 HTTP/1.1\r\n" + host + b"User-Agent: fuzz\r\n\r\n",
    ]  # fmt: skip


def proxy_injections(world: World) -> list[bytes]:
    """Header lines spliced into guest requests: the victim's identity, framing, folding."""
    victim = world.guests["b_dhcp"]
    signature = identity.sign_instance_id(world.chain.secret, victim.uuid)
    return [
        f"X-Forwarded-For: {world.guests['a_router'].address}\r\n".encode(),
        f"x-neutron-network-id: {victim.network_id}\r\n".encode(),
        f"X-Neutron-Router-ID: {world.routers['b']}\r\n".encode(),
        f"X-Instance-ID: {victim.uuid}\r\nX-Instance-ID-Signature: {signature}\r\n".encode(),
        f"X-Tenant-ID: {victim.project_id}\r\n".encode(),
        f"Forwarded: for={victim.address}\r\n".encode(),
        f"X-OVN-Network-ID: {victim.network_id}\r\n".encode(),
        b"Transfer-Encoding: chunked\r\n",
        b"Content-Length: 7\r\n",
        b"Content-Length: 99999999999999\r\n",
        b"Connection: close\r\n",
        b"Connection: upgrade\r\nUpgrade: h2c\r\n",
        b"X-Note: a\r\n folded\r\n",
        b"Expect: 100-continue\r\n",
    ]


def agent_corpus(world: World) -> list[bytes]:
    """Requests as a proxy sends them for project a's guests (a compromised proxy's view)."""
    dhcp, router = world.guests["a_dhcp"], world.guests["a_router"]
    net = f"X-Neutron-Network-ID: {world.networks['a']}\r\n".encode()
    rtr = f"X-Neutron-Router-ID: {world.routers['a']}\r\n".encode()
    host = b"Host: 169.254.169.254\r\n"
    md = MD.encode()
    return [
        b"GET " + md + b" HTTP/1.1\r\n" + host + b"X-Forwarded-For: %s\r\n" % dhcp.address.encode()
        + net + b"\r\n",
        b"GET /latest/meta-data/instance-id HTTP/1.1\r\n" + host
        + b"X-Forwarded-For: %s\r\n" % router.address.encode() + rtr + b"\r\n",
        b"GET " + md + b" HTTP/1.1\r\n" + host
        + b"X-Forwarded-For: %s\r\n" % eui64_link_local(dhcp.mac).encode() + net + b"\r\n",
        b"POST " + md + b" HTTP/1.1\r\n" + host + b"X-Forwarded-For: %s\r\n" % dhcp.address.encode()
        + net + b"Content-Length: 5\r\n\r\nhello",
        b"HEAD " + md + b" HTTP/1.1\r\n" + host + b"X-Forwarded-For: %s\r\n" % dhcp.address.encode()
        + net + b"\r\n",
        b"GET /latest/meta-data/ HTTP/1.1\r\n" + host
        + b"X-Forwarded-For: %s\r\n" % router.address.encode() + rtr + b"\r\n"
        b"GET /latest/meta-data/local-ipv4 HTTP/1.1\r\n" + host
        + b"X-Forwarded-For: %s\r\n" % router.address.encode() + rtr + b"\r\n",
    ]  # fmt: skip


def agent_injections(world: World) -> list[bytes]:
    """Only project a's ids and garbage: a lone project-b id would rightly name project b."""
    return [
        f"X-Forwarded-For: {world.guests['a_router'].address}\r\n".encode(),
        b"X-Forwarded-For: 10.77.0.5, 10.77.0.6\r\n",
        b"X-Forwarded-For: ::ffff:10.77.0.5\r\n",
        b"X-Forwarded-For: fe80::1\r\n",
        f"X-Neutron-Network-ID: {world.networks['a']}\r\n".encode(),
        f"X-Neutron-Router-ID: {world.routers['a']}\r\n".encode(),
        b"X-Neutron-Network-ID: ../../v1/ports?x=\r\n",
        b"X-Neutron-Router-ID: \r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Content-Length: 3\r\n",
        b"X-Note: a\r\n folded\r\n",
    ]


def fuzz(
    mutator: Mutator, *, netns: str | None, unix: str | None, hang_limit: float
) -> list[tuple[Mutant, Outcome]]:
    """Send batches of mutants until the case count or the time budget runs out."""
    done: list[tuple[Mutant, Outcome]] = []
    started = time.monotonic()
    while len(done) < CASES and time.monotonic() - started < SECONDS:
        mutants = [mutator.mutant(len(done) + n) for n in range(min(BATCH, CASES - len(done)))]
        outcomes = exchange(
            [(m.name, m.parts) for m in mutants],
            netns=netns,
            unix=unix,
            gap=0.01,
            hang_limit=hang_limit,
            concurrency=128,
        )
        done += zip(mutants, outcomes, strict=True)
    return done


def check(
    done: list[tuple[Mutant, Outcome]], secrets: dict[str, bytes], allowed: set[str]
) -> collections.Counter[int]:
    """The invariants of every case; returns how often each status was seen."""
    seen: collections.Counter[int] = collections.Counter()
    for mutant, outcome in done:
        why = f"{outcome.describe()} sent={mutant.data[:300]!r}"
        statuses = [int(code) for code in _STATUS.findall(outcome.raw)]
        seen.update(statuses or [0])
        assert not leaks(outcome.raw, secrets), why
        assert all(status < 500 for status in statuses), why
        # Closed without an answer: nothing was begun (empty, or blank lines), or the
        # server answered and closed while the rest was still being sent (a reset or
        # EPIPE drops the unread reply on the client side).
        assert statuses or outcome.closed, f"no answer and not closed: {why}"
        for answer in outcome.answers:
            if answer.status == 200 and answer.body.startswith(b'{"uuid"'):
                assert json.loads(answer.body)["uuid"] in allowed, why
    return seen


def test_fuzz_the_proxy_from_a_guest(world: World, intact: Baseline) -> None:
    guest = world.guests["a_dhcp"]
    mutator = Mutator(proxy_corpus(), proxy_injections(world), SEED)
    done = fuzz(mutator, netns=guest.netns, unix=None, hang_limit=HEADER_TIMEOUT + 2.0)
    seen = check(done, secrets_of_others(world, guest.key), {guest.uuid})
    assert len(done) >= min(CASES, BATCH), len(done)
    print(f"proxy: {len(done)} mutated requests, statuses {sorted(seen.items())}")
    recovered(world, intact)
    assert revision(world) == intact.revision


def test_fuzz_the_agent_socket(world: World, intact: Baseline) -> None:
    mutator = Mutator(agent_corpus(world), agent_injections(world), SEED + 1)
    done = fuzz(
        mutator,
        netns=None,
        unix=str(world.chain.agent_socket),
        hang_limit=AGENT_HEADER_TIMEOUT + 2.0,
    )
    project_b = {
        what: value
        for what, value in secrets_of_others(world, None).items()
        if what.startswith("b_")
    }
    allowed = {g.uuid for g in world.guests.values() if g.instance and g.key.startswith("a_")}
    seen = check(done, project_b, allowed)
    assert len(done) >= min(CASES, BATCH), len(done)
    print(f"agent: {len(done)} mutated requests, statuses {sorted(seen.items())}")
    recovered(world, intact)
    assert revision(world) == intact.revision
