"""Clients that shut their sending side down after the request (`printf ... | nc`).

HTTP/1.1 allows the half-close: every complete request is answered in full, in order,
and then the connection closes; a request cut short by the end is refused. Checked at
each hop a client can reach: the proxy from a guest on both paths (DHCP namespace and
router NAT), the agent's unix socket and the metadata API, and with busybox `nc`.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from e2e.world import GuestVm, World
from metastack import identity
from security.harness import (
    HEADER_TIMEOUT,
    MD,
    METADATA_HOST,
    Answer,
    Baseline,
    Outcome,
    exchange,
)

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

EC2_ID = b"/latest/meta-data/instance-id"
OK_LINE = b"HTTP/1.1 200 OK\r\n"
# Well before the guest-side head deadline: the end of input settles a request at once.
PROMPT = 2.0


def requests(extra: bytes) -> dict[str, tuple[bytes, list[str]]]:
    """case -> (bytes sent, expected answers in order: "ec2", "md" or "400");
    `extra` is header lines every request carries (identity headers past the proxy)."""
    ec2_10 = b"GET " + EC2_ID + b" HTTP/1.0\r\n" + extra + b"\r\n"
    ec2 = b"GET " + EC2_ID + b" HTTP/1.1\r\nHost: 169.254.169.254\r\n" + extra + b"\r\n"
    md = b"GET " + MD.encode() + b" HTTP/1.1\r\nHost: 169.254.169.254\r\n" + extra + b"\r\n"
    return {
        "HTTP/1.0, as in printf | nc": (ec2_10, ["ec2"]),
        "HTTP/1.1": (ec2, ["ec2"]),
        "HTTP/1.1 document": (md, ["md"]),
        "three pipelined": (md + ec2 + md, ["md", "ec2", "md"]),
        "cut short": (md[:-2], ["400"]),
        "complete, then cut short": (ec2 + md[:30], ["ec2", "400"]),
    }


def check_answer(outcome: Outcome, answer: Answer, expected: str, guest: GuestVm) -> None:
    why = outcome.describe()
    if expected == "400":
        assert (answer.status, answer.header("connection")) == (400, "close"), why
    elif expected == "ec2":
        assert answer.status == 200, why
        assert answer.body == guest.ec2_id.encode(), why
    else:
        assert answer.status == 200, why
        assert json.loads(answer.body)["uuid"] == guest.uuid, why


def check(
    outcomes: list[Outcome], cases: dict[str, tuple[bytes, list[str]]], guest: GuestVm
) -> None:
    assert len(outcomes) == len(cases)
    for outcome in outcomes:
        expected = cases[outcome.case][1]
        why = outcome.describe()
        assert outcome.raw.startswith(b"HTTP/1.1 "), why
        assert [a.status for a in outcome.answers] == [
            400 if e == "400" else 200 for e in expected
        ], why
        for answer, kind in zip(outcome.answers, expected, strict=True):
            check_answer(outcome, answer, kind, guest)
        # The connection ends after the last answer, at once. (That answer says so when
        # the end of input came before it was written; an answer to HTTP/1.0 always does.)
        assert outcome.closed, why
        if outcome.case.startswith("HTTP/1.0"):
            assert outcome.answers[-1].header("connection") == "close", why
        assert not outcome.leftover, why
        assert outcome.seconds < PROMPT, why
    assert outcomes[0].raw.startswith(OK_LINE)


@pytest.mark.parametrize("key", ["a_dhcp", "a_router", "b_dhcp", "b_router"])
def test_proxy_answers_a_half_closed_guest(world: World, intact: Baseline, key: str) -> None:
    guest = world.guests[key]
    cases = requests(b"")
    outcomes = exchange(
        [(case, [raw]) for case, (raw, _) in cases.items()],
        netns=guest.netns,
        half_close=True,
        hang_limit=HEADER_TIMEOUT + 2.0,
    )
    check(outcomes, cases, guest)


@pytest.mark.parametrize("key", ["a_dhcp", "a_router"])
def test_agent_socket_answers_a_half_closed_client(
    world: World, intact: Baseline, key: str
) -> None:
    guest = world.guests[key]
    project = key[0]
    scope = (
        f"X-Neutron-Network-ID: {world.networks[project]}"
        if guest.path == "dhcp"
        else f"X-Neutron-Router-ID: {world.routers[project]}"
    )
    extra = f"X-Forwarded-For: {guest.address}\r\n{scope}\r\n".encode()
    cases = requests(extra)
    outcomes = exchange(
        [(case, [raw]) for case, (raw, _) in cases.items()],
        unix=str(world.chain.agent_socket),
        half_close=True,
    )
    check(outcomes, cases, guest)


def test_metadata_api_answers_a_half_closed_client(world: World, intact: Baseline) -> None:
    guest = world.guests["a_dhcp"]
    signature = identity.sign_instance_id(world.chain.secret, guest.uuid)
    extra = (
        f"X-Instance-ID: {guest.uuid}\r\nX-Instance-ID-Signature: {signature}\r\n"
        f"X-Tenant-ID: {guest.project_id}\r\nX-Forwarded-For: {guest.address}\r\n"
    ).encode()
    cases = requests(extra)
    outcomes = exchange(
        [(case, [raw]) for case, (raw, _) in cases.items()],
        host=world.chain.host,
        port=world.chain.metadata_port,
        half_close=True,
    )
    check(outcomes, cases, guest)


@pytest.mark.parametrize("key", ["a_dhcp", "a_router"])
def test_busybox_nc_in_a_guest(world: World, intact: Baseline, key: str) -> None:
    # busybox nc shuts its sending side down when its input ends and prints the answer.
    guest = world.guests[key]
    done = subprocess.run(
        ["ip", "netns", "exec", guest.netns, "busybox", "nc", "-w", "5", METADATA_HOST, "80"],
        input=b"GET " + EC2_ID + b" HTTP/1.0\r\n\r\n",
        capture_output=True,
        timeout=20,
    )
    assert done.returncode == 0, done
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert head.startswith(OK_LINE), done
    assert b"\r\nConnection: close" in head, done
    assert body == guest.ec2_id.encode(), done
