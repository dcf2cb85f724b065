"""Desired vs actual, purely: the plan steps that turn what a namespace holds into its spec."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from metastack.netagent.desired import Listener, NamespaceSpec, PortLink
from metastack.netns.inspect import LinkState, NamespaceState, normalise_rule
from metastack.netns.plan import (
    AddAddress,
    AddBridge,
    AddNetns,
    AddRoute,
    AddVeth,
    DeleteAddress,
    DeleteLink,
    DeleteNetns,
    DeleteRoute,
    FirewallRule,
    LinkUp,
    ReplaceFirewall,
    SetLink,
    SetMaster,
    Step,
    Sysctl,
)

# Link kinds the netagent creates inside its namespaces; anything else there is left alone.
MANAGED_KINDS = frozenset({"veth"})


def canonical_cidr(cidr: str) -> str:
    """`10.0.0.2/24`, `fe80::a9fe:a9fe/128`: the form `ip -j` reports."""
    return ipaddress.ip_interface(cidr).with_prefixlen


def diff_bridges(fabric: str, bridges: Iterable[str], actual: dict[str, LinkState]) -> list[Step]:
    """Create missing bridges in the fabric namespace and bring them up."""
    steps: list[Step] = []
    for bridge in bridges:
        link = actual.get(bridge)
        if link is None:
            steps += [AddBridge(fabric, bridge), LinkUp(fabric, bridge)]
        elif not link.up:
            steps.append(LinkUp(fabric, bridge))
    return steps


def _new_link(spec: NamespaceSpec, link: PortLink, fabric: str) -> list[Step]:
    steps: list[Step] = [
        AddVeth(fabric, link.peer, spec.name, link.name),
        SetLink(fabric, link.peer, mtu=link.mtu),
        SetMaster(fabric, link.peer, link.bridge),
        LinkUp(fabric, link.peer),
        SetLink(spec.name, link.name, mac=link.mac, mtu=link.mtu),
        LinkUp(spec.name, link.name),
    ]
    steps += [_add_address(spec.name, link.name, cidr) for cidr in link.addresses]
    return steps


def _add_address(netns: str, link: str, cidr: str) -> AddAddress:
    # IPv6 addresses skip DAD: the DHCP port's addresses are unique by allocation.
    return AddAddress(netns, link, cidr, nodad=":" in cidr)


def _diff_link(
    spec: NamespaceSpec, link: PortLink, have: LinkState, peer: LinkState, fabric: str
) -> list[Step]:
    steps: list[Step] = []
    mac = link.mac if have.mac.lower() != link.mac.lower() else None
    mtu = link.mtu if have.mtu != link.mtu else None
    if mac or mtu:
        steps.append(SetLink(spec.name, link.name, mac=mac, mtu=mtu))
    if peer.mtu != link.mtu:
        steps.append(SetLink(fabric, link.peer, mtu=link.mtu))
    if peer.master != link.bridge:
        steps.append(SetMaster(fabric, link.peer, link.bridge))
    if not peer.up:
        steps.append(LinkUp(fabric, link.peer))
    if not have.up:
        steps.append(LinkUp(spec.name, link.name))
    want = {canonical_cidr(c) for c in link.addresses}
    steps += [DeleteAddress(spec.name, link.name, c) for c in sorted(have.addresses - want)]
    steps += [_add_address(spec.name, link.name, c) for c in sorted(want - have.addresses)]
    return steps


def rules_match(want: Sequence[FirewallRule], have: Sequence[FirewallRule] | None) -> bool:
    """Same rules in the same order per (table, chain), as iptables-save prints them."""
    if have is None:
        return False

    def key(rules: Sequence[FirewallRule]) -> dict[tuple[str, str], list[tuple[str, ...]]]:
        chains: dict[tuple[str, str], list[tuple[str, ...]]] = {}
        for rule in rules:
            chains.setdefault((rule.table, rule.chain), []).append(normalise_rule(rule.rule))
        return chains

    return key(want) == key(have)


def diff_namespace(
    spec: NamespaceSpec,
    actual: NamespaceState | None,
    fabric: str,
    fabric_links: dict[str, LinkState],
    rules: Sequence[FirewallRule] | None = None,
) -> list[Step]:
    """Steps that make namespace `spec.name` (absent when `actual` is None) match `spec`.

    A state that already matches yields no steps: that is why a restart touches nothing.
    `rules` is what iptables-save shows in it (None: unknown or unparsable).
    """
    steps: list[Step] = []
    fresh = actual is None
    if actual is None:
        steps += [AddNetns(spec.name), LinkUp(spec.name, "lo")]
        steps += [Sysctl(spec.name, key, value) for key, value in spec.sysctls]
        actual = NamespaceState({}, frozenset())
    wanted = {link.name for link in spec.links}
    for name, extra in sorted(actual.links.items()):
        if name not in wanted and extra.kind in MANAGED_KINDS:
            steps.append(DeleteLink(spec.name, name))
    for link in spec.links:
        have = actual.links.get(link.name)
        peer = fabric_links.get(link.peer)
        if have is not None and peer is not None:
            steps += _diff_link(spec, link, have, peer, fabric)
        elif have is not None:
            steps.append(DeleteLink(spec.name, link.name))  # its peer is not on the fabric
            steps += _new_link(spec, link, fabric)
        else:
            if peer is not None:
                steps.append(DeleteLink(fabric, link.peer))  # a leftover holding the name
            steps += _new_link(spec, link, fabric)
    want_routes = set(spec.routes)
    for route in sorted(actual.routes - want_routes, key=str):
        steps.append(DeleteRoute(spec.name, route.dest, route.via, route.dev))
    for route in sorted(want_routes - actual.routes, key=str):
        steps.append(AddRoute(spec.name, route.dest, route.via, route.dev))
    if spec.rules is not None and (fresh or not rules_match(spec.rules, rules)):
        steps.append(ReplaceFirewall(spec.name, spec.rules))
    return steps


def stale_namespaces(
    present: Iterable[str], desired: Iterable[str], prefixes: Sequence[str]
) -> list[str]:
    """Namespaces named like ours (`<prefix>qdhcp-`, `<prefix>qrouter-`) no longer wanted."""
    wanted = set(desired)
    return sorted(
        name for name in present if name.startswith(tuple(prefixes)) and name not in wanted
    )


def delete_namespaces(names: Iterable[str]) -> list[Step]:
    """Steps removing namespaces (their veths go with them, peers included)."""
    return [DeleteNetns(name) for name in names]


def listeners_to_put(
    desired: Iterable[Listener], held: Iterable[Listener], ours: Sequence[str]
) -> list[Listener] | None:
    """The full set to PUT to the proxy, or None if it already holds exactly that.

    Listeners in namespaces not named like ours belong to someone else and are kept.
    """
    held_set = set(held)
    foreign = {item for item in held_set if not item.netns.startswith(tuple(ours))}
    want = set(desired) | foreign
    if want == held_set:
        return None
    return sorted(want, key=lambda item: (item.netns, item.host, item.port))
