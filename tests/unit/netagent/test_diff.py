"""Diffing desired vs actual: a model kernel applies the steps; diffing again yields nothing."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pytest

from metastack.netagent.desired import Desired, Listener, desired_state
from metastack.netagent.diff import (
    diff_bridges,
    diff_namespace,
    listeners_to_put,
    rules_match,
    stale_namespaces,
)
from metastack.netns.inspect import LinkState, NamespaceState, RouteState, normalise_rule
from metastack.netns.plan import (
    AddAddress,
    AddBridge,
    AddNetns,
    AddRoute,
    AddVeth,
    DeleteAddress,
    DeleteLink,
    DeleteRoute,
    FirewallRule,
    LinkUp,
    ReplaceFirewall,
    SetLink,
    SetMaster,
    Step,
    Sysctl,
)
from unit.netagent.builders import (
    NET,
    config,
    dhcp_port,
    network,
    router_port,
    topology,
    vm_port,
)

FABRIC = "ms-t-fabric"


@dataclass
class ModelKernel:
    """Just enough of the kernel to apply plan steps: links per namespace, routes, rules."""

    links: dict[str, dict[str, LinkState]] = field(default_factory=lambda: {FABRIC: {}})
    routes: dict[str, set[RouteState]] = field(default_factory=dict)
    rules: dict[str, list[FirewallRule]] = field(default_factory=dict)
    peers: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    def state(self, netns: str) -> NamespaceState | None:
        if netns not in self.links:
            return None
        return NamespaceState(dict(self.links[netns]), frozenset(self.routes.get(netns, ())))

    def _set(self, netns: str, name: str, **changes: object) -> None:
        link = self.links[netns][name]
        self.links[netns][name] = dataclasses.replace(link, **changes)  # type: ignore[arg-type]

    def _delete_link(self, netns: str, name: str) -> None:
        del self.links[netns][name]
        peer = self.peers.pop((netns, name), None)
        if peer is not None:
            self.peers.pop(peer, None)
            self.links[peer[0]].pop(peer[1], None)

    def apply(self, steps: list[Step]) -> None:
        for step in steps:
            match step:
                case AddNetns(name):
                    assert name not in self.links
                    self.links[name] = {}
                case AddBridge(ns, name):
                    self.links[ns][name] = LinkState(
                        name, "bridge", "", 1500, False, None, frozenset()
                    )
                case AddVeth(ns, name, peer_ns, peer):
                    assert name not in self.links[ns] and peer not in self.links[peer_ns]
                    self.links[ns][name] = LinkState(
                        name, "veth", "aa", 1500, False, None, frozenset()
                    )
                    self.links[peer_ns][peer] = LinkState(
                        peer, "veth", "bb", 1500, False, None, frozenset()
                    )
                    self.peers[(ns, name)] = (peer_ns, peer)
                    self.peers[(peer_ns, peer)] = (ns, name)
                case SetLink(ns, name, mac, mtu):
                    if mac:
                        self._set(ns, name, mac=mac)
                    if mtu:
                        self._set(ns, name, mtu=mtu)
                case SetMaster(ns, name, master):
                    self._set(ns, name, master=master)
                case LinkUp(ns, name):
                    if name != "lo":
                        self._set(ns, name, up=True)
                case AddAddress(ns, name, cidr, _):
                    have = self.links[ns][name].addresses
                    assert cidr not in have
                    self._set(ns, name, addresses=have | {cidr})
                case DeleteAddress(ns, name, cidr):
                    self._set(ns, name, addresses=self.links[ns][name].addresses - {cidr})
                case DeleteLink(ns, name):
                    self._delete_link(ns, name)
                case AddRoute(ns, dest, via, dev):
                    self.routes.setdefault(ns, set()).add(RouteState(dest, via, dev))
                case DeleteRoute(ns, dest, via, dev):
                    self.routes[ns].remove(RouteState(dest, via, dev))
                case ReplaceFirewall(ns, rules, _, _):
                    # iptables-save prints -p tcp with its implicit -m tcp.
                    self.rules[ns] = [
                        dataclasses.replace(r, rule=normalise_rule(r.rule)) for r in rules
                    ]
                case Sysctl():
                    pass
                case _:
                    raise AssertionError(f"unexpected step {step}")

    def plan(self, desired: Desired) -> list[Step]:
        steps = diff_bridges(desired.fabric, desired.bridges, self.links[FABRIC])
        self.apply(steps)
        for spec in desired.namespaces.values():
            found = diff_namespace(
                spec, self.state(spec.name), FABRIC, self.links[FABRIC], self.rules.get(spec.name)
            )
            self.apply(found)
            steps += found
        return steps


def _desired(**fields: object) -> Desired:
    net = network(ports=(dhcp_port(), router_port(), vm_port()))
    return desired_state(topology(net, routed=True), config(**fields))


def test_from_nothing_then_nothing_more() -> None:
    kernel = ModelKernel()
    desired = _desired()
    assert kernel.plan(desired)
    assert kernel.plan(desired) == []


@pytest.mark.parametrize(
    "perturb",
    [
        "mac",
        "mtu",
        "down",
        "extra_address",
        "missing_address",
        "wrong_route",
        "rules",
        "stray_link",
        "unbridged",
        "peer_gone",
        "bridge_down",
    ],
)
def test_repairs_drift(perturb: str) -> None:
    kernel = ModelKernel()
    desired = _desired()
    kernel.plan(desired)
    dhcp_ns = next(n for n in desired.namespaces if "qdhcp" in n)
    router_ns = next(n for n in desired.namespaces if "qrouter" in n)
    link = desired.namespaces[dhcp_ns].links[0]
    if perturb == "mac":
        kernel._set(dhcp_ns, link.name, mac="fa:16:3e:ff:ff:ff")
    elif perturb == "mtu":
        kernel._set(FABRIC, link.peer, mtu=9000)
    elif perturb == "down":
        kernel._set(dhcp_ns, link.name, up=False)
    elif perturb == "extra_address":
        kernel._set(
            dhcp_ns,
            link.name,
            addresses=kernel.links[dhcp_ns][link.name].addresses | {"10.0.0.99/24"},
        )
    elif perturb == "missing_address":
        kernel._set(dhcp_ns, link.name, addresses=frozenset({"10.0.0.2/24"}))
    elif perturb == "wrong_route":
        kernel.routes[dhcp_ns] = {RouteState("default", "10.0.0.254", link.name)}
    elif perturb == "rules":
        kernel.rules[router_ns] = kernel.rules[router_ns][::-1]
    elif perturb == "stray_link":
        kernel.apply([AddVeth(FABRIC, "tapstray", dhcp_ns, "ns-stray")])
    elif perturb == "unbridged":
        kernel._set(FABRIC, link.peer, master=None)
    elif perturb == "peer_gone":
        kernel.peers.pop((FABRIC, link.peer))
        kernel.peers.pop((dhcp_ns, link.name))
        del kernel.links[FABRIC][link.peer]
    elif perturb == "bridge_down":
        kernel._set(FABRIC, link.bridge, up=False)
    repair = kernel.plan(desired)
    assert repair
    assert kernel.plan(desired) == []


def test_rules_match_as_iptables_save_prints_them() -> None:
    desired = _desired()
    spec = next(s for s in desired.namespaces.values() if s.rules)
    assert spec.rules is not None
    saved = [dataclasses.replace(r, rule=normalise_rule(r.rule)) for r in spec.rules]
    assert rules_match(spec.rules, saved)
    assert not rules_match(spec.rules, saved[:-1])
    assert not rules_match(spec.rules, None)


def test_stale_namespaces_only_ours() -> None:
    present = ["ms-t-qdhcp-a", "ms-t-qdhcp-b", "ms-t-qrouter-r", "qdhcp-x", "ms-t-fabric"]
    prefixes = ("ms-t-qdhcp-", "ms-t-qrouter-")
    assert stale_namespaces(present, ["ms-t-qdhcp-a"], prefixes) == [
        "ms-t-qdhcp-b",
        "ms-t-qrouter-r",
    ]


def test_listeners_put_only_on_difference_and_keep_foreign() -> None:
    ours = ("ms-t-qdhcp-", "ms-t-qrouter-")
    mine = Listener(f"ms-t-qdhcp-{NET}", "169.254.169.254", 80, network_id=NET)
    foreign = Listener("other-ns", "169.254.169.254", 80, network_id="n2")
    stale = Listener("ms-t-qdhcp-gone", "169.254.169.254", 80, network_id="gone")
    assert listeners_to_put([mine], [mine, foreign], ours) is None
    assert listeners_to_put([mine], [foreign, stale], ours) == [mine, foreign]
    assert listeners_to_put([], [mine], ours) == []


def test_listener_json_round_trip() -> None:
    item = Listener("ns", "fe80::a9fe:a9fe", 80, network_id="n", interface="ns-1")
    assert Listener.from_json(item.to_json()) == item
    assert "router_id" not in item.to_json()
