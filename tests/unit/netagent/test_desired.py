"""Desired state from control-API objects: upstream's metadata route rules.

The rules: docs/wire-contracts.md#when-a-dhcp-namespace-serves-metadata and
docs/wire-contracts.md#dhcp-option-121.
"""

from __future__ import annotations

from metastack.netagent.desired import (
    Listener,
    classless_routes,
    desired_state,
    isolated_subnets,
    serves_metadata,
)
from metastack.netns.dnsmasq import DhcpHost
from metastack.netns.inspect import RouteState
from metastack.netns.plan import metadata_redirect_rules
from unit.netagent.builders import (
    DHCP_PORT,
    NET,
    ROUTER,
    ROUTER_PORT,
    SUB,
    SUB6,
    config,
    dhcp_port,
    network,
    router_port,
    subnet,
    topology,
    vm_port,
)

DHCP_NS = f"ms-t-qdhcp-{NET}"
ROUTER_NS = f"ms-t-qrouter-{ROUTER}"
TAG = f"subnet-{SUB}"


def _options(desired_dhcp: object) -> dict[str, tuple[str, ...]]:
    options = desired_dhcp.options  # type: ignore[attr-defined]
    return {o.option: o.values for o in options if o.tag == TAG}


def test_isolated_subnet_routes_metadata_via_the_dhcp_port() -> None:
    net = network(ports=(dhcp_port(), vm_port()))
    desired = desired_state(topology(net), config())
    opts = _options(desired.dhcp[NET])
    route = ("169.254.169.254/32", "10.0.0.2", "0.0.0.0/0", "10.0.0.1")
    assert opts["option:classless-static-route"] == route
    assert opts["249"] == route
    assert opts["option:router"] == ("10.0.0.1",)
    assert opts["option:mtu"] == ("1450",)
    assert desired.listeners == (Listener(DHCP_NS, "169.254.169.254", 80, network_id=NET),)
    link = desired.namespaces[DHCP_NS].links[0]
    assert link.name == f"ns-{DHCP_PORT[:11]}" and link.peer == f"tap{DHCP_PORT[:11]}"
    assert link.addresses == ("10.0.0.2/24", "169.254.169.254/32")
    assert (link.mac, link.mtu, link.bridge) == ("fa:16:3e:00:00:02", 1450, f"ms-br-{NET[:8]}")
    assert desired.namespaces[DHCP_NS].routes == (RouteState("default", "10.0.0.1", link.name),)


def test_routed_subnet_routes_metadata_via_the_gateway_and_dhcp_serves_none() -> None:
    net = network(ports=(dhcp_port(), router_port(), vm_port()))
    desired = desired_state(topology(net, routed=True), config())
    assert isolated_subnets(net) == {SUB: False}
    assert _options(desired.dhcp[NET])["option:classless-static-route"] == (
        "169.254.169.254/32",
        "10.0.0.1",
        "0.0.0.0/0",
        "10.0.0.1",
    )
    assert desired.listeners == (Listener(ROUTER_NS, "0.0.0.0", 9697, router_id=ROUTER),)
    # enable_isolated_metadata still puts the address on the DHCP port (upstream does).
    assert "169.254.169.254/32" in desired.namespaces[DHCP_NS].links[0].addresses


def test_force_metadata_uses_the_dhcp_port_even_when_routed() -> None:
    net = network(ports=(dhcp_port(), router_port()))
    desired = desired_state(topology(net, routed=True), config(force_metadata=True))
    assert _options(desired.dhcp[NET])["option:classless-static-route"][:2] == (
        "169.254.169.254/32",
        "10.0.0.2",
    )
    assert set(desired.listeners) == {
        Listener(DHCP_NS, "169.254.169.254", 80, network_id=NET),
        Listener(ROUTER_NS, "0.0.0.0", 9697, router_id=ROUTER),
    }


def test_isolated_metadata_disabled_pushes_no_routes() -> None:
    net = network(ports=(dhcp_port(),))
    cfg = config(enable_isolated_metadata=False)
    desired = desired_state(topology(net), cfg)
    opts = _options(desired.dhcp[NET])
    assert "option:classless-static-route" not in opts and "249" not in opts
    assert not serves_metadata(net, cfg)
    assert desired.listeners == ()
    assert desired.namespaces[DHCP_NS].links[0].addresses == ("10.0.0.2/24",)


def test_routed_without_isolated_metadata_still_points_guests_at_the_gateway() -> None:
    net = network(ports=(dhcp_port(), router_port()))
    routes = classless_routes(
        subnet(), net, False, "10.0.0.2", config(enable_isolated_metadata=False)
    )
    assert routes == [("169.254.169.254/32", "10.0.0.1"), ("0.0.0.0/0", "10.0.0.1")]


def test_host_routes_on_link_subnets_and_default_host_route() -> None:
    main = subnet(
        gateway_ip=None,
        host_routes=(("0.0.0.0/0", "10.0.0.254"), ("192.168.5.0/24", "10.0.0.9")),
    )
    other = subnet(id="77777777-7777-4777-8777-777777777777", cidr="10.1.0.0/24")
    net = network(subnets=(main, other), ports=(dhcp_port(),))
    routes = classless_routes(main, net, True, "10.0.0.2", config())
    assert routes == [
        ("10.1.0.0/24", "0.0.0.0"),
        ("192.168.5.0/24", "10.0.0.9"),
        ("169.254.169.254/32", "10.0.0.2"),
        ("0.0.0.0/0", "10.0.0.254"),
    ]


def test_subnet_without_gateway_gets_an_empty_router_option_and_no_default_route() -> None:
    net = network(subnets=(subnet(gateway_ip=None),), ports=(dhcp_port(),))
    desired = desired_state(topology(net), config())
    opts = _options(desired.dhcp[NET])
    assert opts["option:router"] == ()
    assert opts["option:classless-static-route"] == ("169.254.169.254/32", "10.0.0.2")
    assert desired.namespaces[DHCP_NS].routes == ()


def test_ipv6_subnet_is_skipped_for_dhcp_but_gets_the_link_local_listener() -> None:
    v6 = subnet(id=SUB6, cidr="2001:db8::/64", ip_version=6, gateway_ip="2001:db8::1")
    port = dhcp_port((SUB, "10.0.0.2"), (SUB6, "2001:db8::2"))
    net = network(subnets=(subnet(), v6), ports=(port,))
    desired = desired_state(topology(net), config())
    dnsmasq = desired.dhcp[NET]
    assert [r.tag for r in dnsmasq.ranges] == [TAG]
    assert {o.tag for o in dnsmasq.options} == {TAG}
    # No on-link route for the IPv6 subnet in the IPv4 option.
    assert _options(dnsmasq)["option:classless-static-route"][0] == "169.254.169.254/32"
    link = desired.namespaces[DHCP_NS].links[0]
    assert link.addresses == (
        "10.0.0.2/24",
        "2001:db8::2/64",
        "169.254.169.254/32",
        "fe80::a9fe:a9fe/128",
    )
    assert (
        Listener(DHCP_NS, "fe80::a9fe:a9fe", 80, network_id=NET, interface=link.name)
        in desired.listeners
    )


def test_static_leases_for_instance_ports_only() -> None:
    net = network(
        ports=(dhcp_port(), router_port(), vm_port(), vm_port("10.0.0.10", "fa:16:3e:0a:0a:0a"))
    )
    desired = desired_state(topology(net, routed=True), config())
    assert desired.dhcp[NET].hosts == (
        DhcpHost("fa:16:3e:00:00:05", "host-10-0-0-5", "10.0.0.5"),
        DhcpHost("fa:16:3e:0a:0a:0a", "host-10-0-0-10", "10.0.0.10"),
    )


def test_router_namespace() -> None:
    net = network(ports=(dhcp_port(), router_port()))
    desired = desired_state(topology(net, routed=True), config(metadata_port=9000))
    spec = desired.namespaces[ROUTER_NS]
    (link,) = spec.links
    assert link.name == f"qr-{ROUTER_PORT[:11]}"
    assert link.addresses == ("10.0.0.1/24",)
    assert spec.rules == tuple(metadata_redirect_rules(ROUTER_NS, 9000, "0x1/0xffff"))
    assert ("net.ipv4.ip_forward", "1") in spec.sysctls
    assert desired.bridges == (f"ms-br-{NET[:8]}",)


def test_network_without_dhcp_gets_only_its_bridge() -> None:
    net = network(subnets=(subnet(enable_dhcp=False),), ports=(vm_port(),))
    desired = desired_state(topology(net), config())
    assert desired.namespaces == {} and desired.dhcp == {}
    assert desired.bridges == (f"ms-br-{NET[:8]}",)
