"""The plan steps the netagent added: removals first, atomic firewall replacement."""

from __future__ import annotations

from metastack.netns.plan import (
    AddAddress,
    AddVeth,
    Command,
    DeleteAddress,
    DeleteLink,
    DeleteRoute,
    FirewallRule,
    ReplaceFirewall,
    SetLink,
    compile_plan,
)


def test_removals_before_additions() -> None:
    commands = compile_plan(
        [
            AddAddress("q", "ns-1", "10.0.0.3/24"),
            AddVeth("fab", "tap1", "q", "ns-1"),
            SetLink("q", "ns-1", mac="fa:16:3e:00:00:01", mtu=1450),
            DeleteAddress("q", "ns-1", "10.0.0.2/24"),
            DeleteLink("fab", "tapold"),
            DeleteRoute("q", "default", via="10.0.0.1", dev="ns-1"),
        ]
    )
    assert commands == [
        Command(
            ("ip", "-n", "q", "-batch", "-"),
            "route del default via 10.0.0.1 dev ns-1\n",
        ),
        Command(("ip", "-n", "q", "-batch", "-"), "addr del 10.0.0.2/24 dev ns-1\n"),
        Command(("ip", "-n", "fab", "-batch", "-"), "link del tapold\n"),
        Command(
            ("ip", "-n", "fab", "-batch", "-"), "link add tap1 type veth peer name ns-1 netns q\n"
        ),
        Command(
            ("ip", "-n", "q", "-batch", "-"),
            "addr add 10.0.0.3/24 dev ns-1\nlink set ns-1 address fa:16:3e:00:00:01 mtu 1450\n",
        ),
    ]


def test_replace_firewall_flushes_named_tables_in_one_restore() -> None:
    rule = FirewallRule("r", "nat", "PREROUTING", ("-j", "REDIRECT"))
    (command,) = compile_plan([ReplaceFirewall("r", (rule,), tables=("filter", "nat"))])
    assert command == Command(
        ("ip", "netns", "exec", "r", "iptables-restore"),
        "*filter\nCOMMIT\n*nat\n-A PREROUTING -j REDIRECT\nCOMMIT\n",
    )
