"""Forged identity headers in every shape, and link-local sources no port owns: no leak."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator

import pytest

from e2e.test_ipv6 import eui64_link_local
from e2e.world import GuestVm, World
from metastack import identity
from security.harness import MD, Baseline, Outcome, exchange, leaks, revision, secrets_of_others

pytestmark = [pytest.mark.e2e, pytest.mark.netns]

HEAD = b"GET " + MD.encode() + b" HTTP/1.1\r\n"
HOST = b"Host: 169.254.169.254\r\n"
# The letter cases tried for every header name.
CASES: dict[str, Callable[[str], str]] = {
    "as-is": str,
    "lower": str.lower,
    "upper": str.upper,
    "mixed": str.swapcase,
}


def identity_values(world: World, victim: GuestVm) -> dict[str, str]:
    """Each identity header with the victim's value (a valid signature of its uuid)."""
    return {
        "X-Forwarded-For": victim.address,
        "Forwarded": f"for={victim.address}",
        "X-Instance-ID": victim.uuid,
        "X-Instance-ID-Signature": identity.sign_instance_id(world.chain.secret, victim.uuid),
        "X-Tenant-ID": victim.project_id,
        "X-Neutron-Network-ID": victim.network_id,
        "X-Neutron-Router-ID": world.routers["b" if victim.key.startswith("b") else "a"],
        "X-OVN-Network-ID": victim.network_id,
        "X-OVN-Metadata-Router-ID": victim.network_id,
    }


def forgeries(world: World, victim: GuestVm) -> Iterator[tuple[str, bytes, bool]]:
    """(case, request bytes, malformed) for every shape of every identity header."""
    values = identity_values(world, victim)
    for name, value in values.items():
        for case, change in CASES.items():
            line = f"{change(name)}: {value}\r\n".encode()
            yield f"{name} {case}", HEAD + HOST + line + b"\r\n", False
            yield f"{name} {case} twice", HEAD + HOST + line + line + b"\r\n", False
            yield f"{name} {case} first", HEAD + line + HOST + b"\r\n", False
            yield f"{name} {case} only header", HEAD + line + b"\r\n", False
        raw = name.encode()
        value_b = value.encode()
        shapes = {
            "tab": b"%s:\t%s\t\r\n" % (raw, value_b),
            "trailing spaces": b"%s: %s   \r\n" % (raw, value_b),
            "no space": b"%s:%s\r\n" % (raw, value_b),
            "empty": b"%s:\r\n" % raw,
            "blank": b"%s: \t \r\n" % raw,
            "empty then victim": b"%s:\r\n%s: %s\r\n" % (raw, raw, value_b),
            "victim then empty": b"%s: %s\r\n%s:\r\n" % (raw, value_b, raw),
            "list": b"%s: %s, %s\r\n" % (raw, value_b, value_b),
        }
        for shape, lines in shapes.items():
            yield f"{name} {shape}", HEAD + HOST + lines + b"\r\n", False
        # obs-fold: a continuation line carrying the header, or continuing its value.
        folded = {
            "folded into another": b"X-Note: harmless\r\n %s: %s\r\n" % (raw, value_b),
            "folded value": b"%s: %s\r\n\t%s\r\n" % (raw, value_b, value_b),
            "folded empty": b"%s:\r\n %s\r\n" % (raw, value_b),
        }
        for shape, lines in folded.items():
            yield f"{name} {shape}", HEAD + HOST + lines + b"\r\n", True
        yield f"{name} space before colon", HEAD + HOST + b"%s : %s\r\n\r\n" % (raw, value_b), True
    every = b"".join(f"{name}: {value}\r\n".encode() for name, value in values.items())
    yield "all at once", HEAD + HOST + every + b"\r\n", False
    yield "all at once, lower", HEAD + HOST + every.lower() + b"\r\n", False
    yield "all at once, only", HEAD + every + b"\r\n", False
    yield "all at once, twice", HEAD + HOST + every + every + b"\r\n", False
    for shape in (
        f'for="{victim.address}"',
        f"for={victim.address};proto=http;by=169.254.169.254",
        f"for=192.0.2.1, for={victim.address}",
        f'for="[{eui64_link_local(victim.mac)}]"',
        "for=unknown",
    ):
        yield f"Forwarded {shape}", HEAD + HOST + f"Forwarded: {shape}\r\n\r\n".encode(), False
    # The second request of a pipeline carries the forgery: answered as the guest again.
    yield "pipelined", HEAD + HOST + b"\r\n" + HEAD + HOST + every + b"\r\n", False


def check(world: World, attacker: GuestVm, outcomes: list[Outcome], malformed: set[str]) -> int:
    """Every answer is the attacker's own (404 without an instance) or a 400; no leak."""
    secrets = secrets_of_others(world, attacker.key)
    for outcome in outcomes:
        assert not leaks(outcome.raw, secrets), outcome.describe()
        assert outcome.answers, outcome.describe()
        for answer in outcome.answers:
            if outcome.case in malformed:
                assert answer.status == 400, outcome.describe()
            elif attacker.instance is None:
                assert answer.status == 404, outcome.describe()
            else:
                assert answer.status == 200, outcome.describe()
                assert json.loads(answer.body)["uuid"] == attacker.uuid, outcome.describe()
    return len(outcomes)


@pytest.mark.parametrize(
    ("attacker", "victim"),
    [
        ("a_dhcp", "b_dhcp"),
        ("a_router", "a_dhcp"),
        ("b_router", "a_router"),
        ("a_orphan", "a_dhcp"),
    ],
)
def test_forged_identity_headers(
    world: World, intact: Baseline, attacker: str, victim: str
) -> None:
    guest, target = world.guests[attacker], world.guests[victim]
    cases = list(forgeries(world, target))
    malformed = {case for case, _, bad in cases if bad}
    outcomes = exchange([(case, [raw]) for case, raw, _ in cases], netns=guest.netns)
    assert check(world, guest, outcomes, malformed) == len(cases) > 250
    assert revision(world) == intact.revision


def _add_link_local(netns: str, address: str) -> None:
    subprocess.run(
        ["ip", "-n", netns, "-6", "addr", "add", f"{address}/64", "dev", "eth0", "nodad"],
        check=True,
    )


def test_link_local_source_without_a_port_gets_404(world: World, intact: Baseline) -> None:
    guest = world.guests["a_dhcp"]
    sources = {
        "unknown MAC": eui64_link_local("02:00:5e:10:00:01"),
        # The MAC of the same-address guest of the other project: its port is on network b.
        "other network's MAC": eui64_link_local(world.guests["b_dhcp"].mac),
        "not EUI-64": "fe80::1234:5678:9abc:def0",
    }
    for address in sources.values():
        _add_link_local(guest.netns, address)
    forged = identity_values(world, world.guests["a_router"])
    every = b"".join(f"{name}: {value}\r\n".encode() for name, value in forged.items())
    secrets = secrets_of_others(world, None)  # the guest's own data is not its own here
    secrets[f"{guest.key} uuid"] = guest.uuid.encode()
    for what, address in sources.items():
        outcomes = exchange(
            [("plain", [HEAD + HOST + b"\r\n"]), ("forged", [HEAD + HOST + every + b"\r\n"])],
            netns=guest.netns,
            host="fe80::a9fe:a9fe%eth0",
            bind=f"{address}%eth0",
        )
        for outcome in outcomes:
            assert outcome.statuses == [404], (what, outcome.describe())
            assert not leaks(outcome.raw, secrets), (what, outcome.describe())
    assert revision(world) == intact.revision
