"""Read what a namespace holds (links, addresses, routes, iptables rules) into plain values."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from metastack.netns import exec as netns_exec
from metastack.netns.plan import FirewallRule


@dataclass(frozen=True, slots=True)
class LinkState:
    """One link as the kernel reports it.

    `addresses` holds global-scope CIDRs and link-local /128s (fe80::a9fe:a9fe); the
    kernel's own EUI-64 /64 link-local address is left out, as nobody manages it.
    """

    name: str
    kind: str
    mac: str
    mtu: int
    up: bool
    master: str | None
    addresses: frozenset[str]


@dataclass(frozen=True, slots=True)
class RouteState:
    dest: str
    via: str | None
    dev: str | None


@dataclass(frozen=True, slots=True)
class NamespaceState:
    links: dict[str, LinkState]
    routes: frozenset[RouteState]


def parse_links(document: list[dict[str, Any]]) -> dict[str, LinkState]:
    """Links from `ip -j -d addr show` (or `link show`, which has no addresses)."""
    links: dict[str, LinkState] = {}
    for entry in document:
        addresses = set()
        for info in entry.get("addr_info", []):
            scope, prefixlen = info.get("scope"), info.get("prefixlen")
            if scope == "global" or (scope == "link" and prefixlen == 128):
                addresses.add(f"{info['local']}/{info['prefixlen']}")
        name = entry["ifname"]
        links[name] = LinkState(
            name=name,
            kind=entry.get("linkinfo", {}).get("info_kind", ""),
            mac=entry.get("address", ""),
            mtu=int(entry.get("mtu", 0)),
            up="UP" in entry.get("flags", []),
            master=entry.get("master"),
            addresses=frozenset(addresses),
        )
    return links


def parse_routes(document: list[dict[str, Any]]) -> frozenset[RouteState]:
    """Routes from `ip -j route show`, without the kernel's own (connected) routes."""
    return frozenset(
        RouteState(entry["dst"], entry.get("gateway"), entry.get("dev"))
        for entry in document
        if entry.get("protocol") != "kernel"
    )


def _json(argv: tuple[str, ...]) -> list[dict[str, Any]]:
    out = netns_exec.run(argv).stdout
    document = json.loads(out) if out.strip() else []
    if not isinstance(document, list):
        raise netns_exec.NetnsError(f"{' '.join(argv)}: unexpected output")
    return document


def _ip(netns: str) -> tuple[str, ...]:
    return ("ip", "-n", netns) if netns else ("ip",)


def read_links(netns: str) -> dict[str, LinkState]:
    """Links of a namespace ("" = the host's) with their addresses."""
    return parse_links(_json((*_ip(netns), "-j", "-d", "addr", "show")))


def read_fabric(netns: str) -> dict[str, LinkState]:
    """Links of the fabric namespace: names, MACs, MTUs, state and masters only.

    Every guest's tap or veth sits there, so this is the largest dump a pass reads; kinds
    and addresses (`-d`, `addr`) are left out, as nothing on the fabric is judged by them.
    """
    return parse_links(_json((*_ip(netns), "-j", "link", "show")))


def read_namespace(netns: str) -> NamespaceState:
    """Links, addresses and IPv4 routes (main table) of a namespace."""
    routes = parse_routes(_json((*_ip(netns), "-j", "-4", "route", "show")))
    return NamespaceState(read_links(netns), routes)


def normalise_rule(words: tuple[str, ...]) -> tuple[str, ...]:
    """A rule as iptables-save prints it: `-p tcp --dport` gains an implicit `-m tcp`."""
    out = list(words)
    for index in range(len(out) - 1):
        if out[index] == "-p" and out[index + 1] in ("tcp", "udp"):
            if out[index + 2 : index + 4] != ["-m", out[index + 1]]:
                out[index + 2 : index + 2] = ["-m", out[index + 1]]
            break
    return tuple(out)


def parse_rules(text: str, netns: str, family: int = 4) -> list[FirewallRule] | None:
    """Rules from `iptables-save` in file order; None if user-defined chains exist
    (then the tables hold something this parser does not model)."""
    rules: list[FirewallRule] = []
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        elif line.startswith(":") and line.split()[1] == "-":
            return None
        elif line.startswith("-A "):
            chain, *words = line[3:].split()
            rules.append(
                FirewallRule(netns, table, chain, tuple(words), family)  # type: ignore[arg-type]
            )
    return rules


def read_rules(netns: str, family: int = 4) -> list[FirewallRule] | None:
    """The iptables rules of a namespace (see parse_rules)."""
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    return parse_rules(netns_exec.run(("ip", "netns", "exec", netns, tool)).stdout, netns, family)
