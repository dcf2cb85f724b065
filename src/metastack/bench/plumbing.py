"""Guest namespaces by the thousand: batched `ip`, DHCP for a sample, static for the rest."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from metastack.demo import guests as demo_guests
from metastack.netns.exec import NetnsError, run
from metastack.netns.sockets import set_sysctls

PARALLEL = 4


@dataclass(frozen=True, slots=True)
class Addressing:
    """What DHCP gives a network's guests: prefix length, MTU, routes (dest, next hop)."""

    prefixlen: int
    mtu: int
    routes: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Plug:
    """One guest to create: namespace, fabric-side port name, bridge, MAC and address."""

    netns: str
    port: str
    bridge: str
    mac: str
    ip: str


def _batch(netns: str | None, lines: Sequence[str], timeout: float = 120.0) -> None:
    if not lines:
        return
    argv = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    run(argv, input="\n".join(lines) + "\n", timeout=timeout)


# Storm guests speak IPv4 only. With IPv6 on, every guest's link-up sends DAD, MLD and
# three router solicitations, each flooded by the lab's one Linux bridge to every other
# port: at 500 guests that is hundreds of thousands of frame copies on the same two cores
# as the chain (and full input backlogs), a cost of simulating the fabric, not of metadata.
GUEST_SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}


def create(plugs: Sequence[Plug], fabric: str) -> None:
    """Make every guest namespace and its eth0 (the port's MAC) on its bridge, link up."""
    _batch(None, [f"netns add {p.netns}" for p in plugs])
    for plug in plugs:
        set_sysctls(plug.netns, GUEST_SYSCTLS)
    lines: list[str] = []
    for p in plugs:
        lines += [
            f"link add {p.port} type veth peer name eth0 address {p.mac} netns {p.netns}",
            f"link set {p.port} master {p.bridge}",
            f"link set {p.port} up",
        ]
    _batch(fabric, lines)
    _parallel(lambda p: _batch(p.netns, ["link set lo up", "link set eth0 up"]), plugs)


def dhcp(plugs: Sequence[Plug], parallel: int = 8) -> dict[str, str]:
    """Run busybox udhcpc in each guest; the error of every guest it failed in."""
    failed: dict[str, str] = {}

    def one(plug: Plug) -> None:
        try:
            demo_guests.dhcp(plug.netns)
        except NetnsError as exc:
            failed[plug.netns] = str(exc)

    _parallel(one, plugs, parallel)
    return failed


def observe(netns: str) -> tuple[str, Addressing]:
    """The address and the DHCP-given MTU and routes a guest holds now."""
    addr = run(["ip", "-n", netns, "-4", "-o", "addr", "show", "dev", "eth0"]).stdout.split()
    cidr = addr[addr.index("inet") + 1] if "inet" in addr else "0.0.0.0/0"
    link = run(["ip", "-n", netns, "-o", "link", "show", "dev", "eth0"]).stdout.split()
    mtu = int(link[link.index("mtu") + 1])
    routes = []
    for line in run(["ip", "-n", netns, "-4", "route", "show"]).stdout.splitlines():
        words = line.split()
        if "via" in words:
            dest = "0.0.0.0/0" if words[0] == "default" else words[0]
            dest = dest if "/" in dest else f"{dest}/32"
            routes.append((dest, words[words.index("via") + 1]))
    ip, _, plen = cidr.partition("/")
    return ip, Addressing(int(plen), mtu, tuple(sorted(routes, key=_route_order)))


def _route_order(route: tuple[str, str]) -> tuple[int, str]:
    return (-ipaddress.ip_network(route[0], strict=False).prefixlen, route[0])


def configure(
    plugs: Sequence[Plug],
    addressing: Mapping[str, Addressing],
    macs: Mapping[str, Mapping[str, str]],
) -> None:
    """Give guests what DHCP would: address, MTU, routes; next hops as permanent neighbours.

    `addressing` is keyed by guest namespace (guests of one network may use different DHCP
    ports as their metadata next hop), `macs` (next hop -> MAC) by bridge, as addresses
    overlap between networks. Permanent neighbours: the kernel's neighbour table is shared
    by all namespaces (gc_thresh3), and in a real cloud these entries live in the guests'
    kernels.
    """

    def one(plug: Plug) -> None:
        given, known = addressing[plug.netns], macs[plug.bridge]
        lines = [
            f"link set eth0 mtu {given.mtu}",
            f"addr add {plug.ip}/{given.prefixlen} dev eth0",
        ]
        lines += [f"route replace {dest} via {hop} dev eth0" for dest, hop in given.routes]
        hops = sorted({hop for _, hop in given.routes if hop in known})
        lines += [f"neigh replace {h} lladdr {known[h]} dev eth0 nud permanent" for h in hops]
        _batch(plug.netns, lines)

    _parallel(one, plugs)


def pin_neighbours(netns: str, device: str, entries: Iterable[tuple[str, str]]) -> None:
    """Permanent neighbour entries (ip, mac) on a server-side port, in one batch."""
    lines = [f"neigh replace {ip} lladdr {mac} dev {device} nud permanent" for ip, mac in entries]
    _batch(netns, lines)


def _parallel(
    work: Callable[[Plug], object], items: Sequence[Plug], workers: int = PARALLEL
) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(work, items):
            pass
