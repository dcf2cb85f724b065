"""Pure namespace plans and the lab's planning (no kernel access)."""

from __future__ import annotations

from pathlib import Path

from metastack.lab import Lab
from metastack.netns.plan import (
    AddAddress,
    AddNetns,
    AddRoute,
    AddVeth,
    Command,
    DeleteNetns,
    FirewallRule,
    LinkUp,
    Step,
    Sysctl,
    compile_plan,
    metadata_redirect_rules,
)


def test_phases_and_batching() -> None:
    steps: list[Step] = [
        AddRoute("g1", "default", via="10.0.0.1"),
        AddAddress("g1", "eth0", "10.0.0.5/24"),
        AddVeth("fab", "p1", "g1", "eth0"),
        AddNetns("g1"),
        AddNetns("fab"),
        LinkUp("g1", "eth0"),
        Sysctl("g1", "net.ipv6.conf.all.accept_dad", "0"),
        FirewallRule("r", "nat", "PREROUTING", ("-j", "REDIRECT")),
        FirewallRule("r", "filter", "INPUT", ("-j", "ACCEPT")),
        FirewallRule("r", "nat", "OUTPUT", ("-j", "ACCEPT"), family=6),
    ]
    assert compile_plan(steps) == [
        Command(("ip", "-batch", "-"), "netns add g1\nnetns add fab\n"),
        Command(("ip", "netns", "exec", "g1", "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")),
        Command(
            ("ip", "-n", "fab", "-batch", "-"), "link add p1 type veth peer name eth0 netns g1\n"
        ),
        Command(
            ("ip", "-n", "g1", "-batch", "-"), "addr add 10.0.0.5/24 dev eth0\nlink set eth0 up\n"
        ),
        Command(("ip", "-n", "g1", "-batch", "-"), "route add default via 10.0.0.1\n"),
        Command(
            ("ip", "netns", "exec", "r", "iptables-restore", "--noflush"),
            "*nat\n-A PREROUTING -j REDIRECT\nCOMMIT\n*filter\n-A INPUT -j ACCEPT\nCOMMIT\n",
        ),
        Command(
            ("ip", "netns", "exec", "r", "ip6tables-restore", "--noflush"),
            "*nat\n-A OUTPUT -j ACCEPT\nCOMMIT\n",
        ),
    ]


def test_delete_is_forced_batch() -> None:
    assert compile_plan([DeleteNetns("a"), DeleteNetns("b")]) == [
        Command(("ip", "-force", "-batch", "-"), "netns delete a\nnetns delete b\n")
    ]


def test_redirect_rules_match_upstream() -> None:
    rules = metadata_redirect_rules("r", 9697)
    nat = next(r for r in rules if r.table == "nat")
    assert " ".join(nat.rule) == (
        "-d 169.254.169.254/32 -i qr-+ -p tcp --dport 80 -j REDIRECT --to-ports 9697"
    )
    assert {(r.table, r.chain) for r in rules} == {
        ("mangle", "PREROUTING"),
        ("nat", "PREROUTING"),
        ("filter", "INPUT"),
        ("filter", "FORWARD"),
    }


def test_lab_plan(tmp_path: Path) -> None:
    lab = Lab("abc123", etc_netns=tmp_path / "netns")
    net = lab.network("a", "10.88.0.0/24")
    dhcp = lab.dhcp(net)
    router = lab.router([net])
    guest = lab.guest(net, 5, metadata_via=dhcp)
    assert lab.namespaces == [
        "ms-abc123-fabric",
        "ms-abc123-qdhcp-1",
        "ms-abc123-qrouter-1",
        "ms-abc123-g1",
    ]
    assert (dhcp.address, guest.address, router.ports["a"]) == (
        "10.88.0.2",
        "10.88.0.5",
        ("qr-0", "10.88.0.1"),
    )
    steps = lab.planned()
    assert AddAddress(dhcp.netns, "tap0", "169.254.169.254/32") in steps
    assert AddRoute(guest.netns, "169.254.169.254/32", via="10.88.0.2") in steps
    for step in steps:
        if isinstance(step, AddVeth):
            assert step.netns == lab.fabric  # never the root namespace
            assert len(step.name) <= 15 and len(step.peer_name) <= 15
    resolv = tmp_path / "netns" / guest.netns / "resolv.conf"
    assert resolv.read_text() == "nameserver 127.0.0.1\n"
    lab._netns = []  # nothing was created in the kernel: only the files to remove
    lab.cleanup()
    assert not (tmp_path / "netns").exists()
    lab.cleanup()
