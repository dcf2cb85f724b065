"""network_data.json byte for byte: links, networks, routes and DNS.

The contract: docs/wire-contracts.md#network-data.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from metastack.metadata import Document
from metastack.metadata.model import FixedIp, HostRoute, Subnet, Vif

TEXT = "text/plain; charset=UTF-8"


def network_json(make_documents, instance) -> bytes:
    doc = make_documents(instance).lookup("/openstack/latest/network_data.json")
    assert isinstance(doc, Document)
    assert doc.content_type == TEXT
    return doc.body


def link(port: str, mtu: str = "1450", kind: str = "ovs", n: str = "01") -> str:
    return (
        f'{{"id": "tap{port}", "vif_id": "{port}", "type": "{kind}", "mtu": {mtu}, '
        f'"ethernet_mac_address": "fa:16:3e:00:00:{n}"}}'
    )


def test_ipv4_dhcp_with_dhcp_port(make_documents, make_instance, make_vif) -> None:
    vif = make_vif(port_id="p1", dhcp_port=True, dns_nameservers=("10.0.0.2",))
    assert (
        network_json(make_documents, make_instance(vifs=(vif,)))
        == (
            '{"links": [' + link("p1", mtu="null") + "], "
            '"networks": [{"id": "network0", "type": "ipv4_dhcp", "link": "tapp1", '
            '"network_id": "net-p1"}], '
            '"services": [{"type": "dns", "address": "10.0.0.2"}]}'
        ).encode()
    )


def test_ipv4_dhcp_without_dhcp_port_keeps_mtu(make_documents, make_instance, make_vif) -> None:
    vif = make_vif(port_id="p1")
    assert (
        network_json(make_documents, make_instance(vifs=(vif,)))
        == (
            '{"links": [' + link("p1") + "], "
            '"networks": [{"id": "network0", "type": "ipv4_dhcp", "link": "tapp1", '
            '"network_id": "net-p1"}], "services": []}'
        ).encode()
    )


def test_ipv4_static_with_routes_and_dns(make_documents, make_instance, make_vif) -> None:
    vif = make_vif(
        port_id="p1",
        enable_dhcp=False,
        dhcp_port=True,  # a DHCP port serving other subnets does not null this link's MTU
        mac="FA:16:3E:00:00:01",
        dns_nameservers=("8.8.8.8", "1.1.1.1"),
        host_routes=(
            HostRoute("172.16.0.0/12", "10.0.0.254"),
            HostRoute("192.168.1.7/24", "10.0.0.253"),
        ),
    )
    dns = '[{"type": "dns", "address": "8.8.8.8"}, {"type": "dns", "address": "1.1.1.1"}]'
    assert (
        network_json(make_documents, make_instance(vifs=(vif,)))
        == (
            '{"links": [' + link("p1") + "], "
            '"networks": [{"id": "network0", "type": "ipv4", "link": "tapp1", '
            '"ip_address": "10.0.0.5", "netmask": "255.255.255.0", "routes": ['
            '{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "10.0.0.1"}, '
            '{"network": "172.16.0.0", "netmask": "255.240.0.0", "gateway": "10.0.0.254"}, '
            '{"network": "192.168.1.0", "netmask": "255.255.255.0", "gateway": "10.0.0.253"}], '
            '"network_id": "net-p1", "services": ' + dns + "}], "
            '"services": ' + dns + "}"
        ).encode()
    )


def test_ipv4_static_without_gateway(make_documents, make_instance, make_vif) -> None:
    vif = make_vif(port_id="p1", enable_dhcp=False, gateway=None, cidr="10.0.0.0/28")
    assert (
        network_json(make_documents, make_instance(vifs=(vif,)))
        == (
            '{"links": [' + link("p1") + "], "
            '"networks": [{"id": "network0", "type": "ipv4", "link": "tapp1", '
            '"ip_address": "10.0.0.5", "netmask": "255.255.255.240", "routes": [], '
            '"network_id": "net-p1", "services": []}], "services": []}'
        ).encode()
    )


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("slaac", "ipv6_slaac"),
        ("dhcpv6-stateful", "ipv6_dhcpv6-stateful"),
        ("dhcpv6-stateless", "ipv6_dhcpv6-stateless"),
    ],
)
def test_ipv6_address_modes(make_documents, make_instance, make_vif, mode: str, kind: str) -> None:
    vif = make_vif(
        port_id="p6",
        ip_version=6,
        address="2001:db8:0:1::5",
        cidr="2001:db8:0:1::/64",
        gateway="2001:db8:0:1::1",
        ipv6_address_mode=mode,
        dns_nameservers=("2001:4860:4860::8888",),
        host_routes=(HostRoute("2001:db8:ff::/48", "2001:db8:0:1::fe"),),
    )
    dns = '[{"type": "dns", "address": "2001:4860:4860::8888"}]'
    assert (
        network_json(make_documents, make_instance(vifs=(vif,)))
        == (
            '{"links": [' + link("p6") + "], "
            '"networks": [{"id": "network0", "type": "' + kind + '", "link": "tapp6", '
            '"ip_address": "2001:db8:0:1::5", "netmask": "ffff:ffff:ffff:ffff::", "routes": ['
            '{"network": "::", "netmask": "::", "gateway": "2001:db8:0:1::1"}, '
            '{"network": "2001:db8:ff::", "netmask": "ffff:ffff:ffff::", '
            '"gateway": "2001:db8:0:1::fe"}], '
            '"network_id": "net-p6", "services": ' + dns + "}], "
            '"services": ' + dns + "}"
        ).encode()
    )


def test_ipv6_without_mode(make_documents, make_instance, make_vif) -> None:
    dhcp = make_vif(port_id="a", ip_version=6, address="2001:db8::5", cidr="2001:db8::/64")
    static = make_vif(
        port_id="b",
        ip_version=6,
        address="2001:db8::6",
        cidr="2001:db8::/120",
        enable_dhcp=False,
        gateway=None,
        mac="fa:16:3e:00:00:02",
    )
    assert (
        network_json(make_documents, make_instance(vifs=(dhcp, static)))
        == (
            '{"links": [' + link("a") + ", " + link("b", n="02") + "], "
            '"networks": [{"id": "network0", "type": "ipv6_dhcp", "link": "tapa", '
            '"network_id": "net-a"}, '
            '{"id": "network1", "type": "ipv6", "link": "tapb", "ip_address": "2001:db8::6", '
            '"netmask": "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00", "routes": [], '
            '"network_id": "net-b", "services": []}], "services": []}'
        ).encode()
    )


def test_dual_stack_and_numbering(make_documents, make_instance, make_vif) -> None:
    v4 = make_vif(port_id="p1", dns_nameservers=("10.0.0.2", "10.0.0.3"))
    v6 = Subnet(
        id="s6",
        network_id="net-p1",
        cidr="2001:db8::/64",
        ip_version=6,
        gateway_ip=None,
        ipv6_address_mode="slaac",
        dns_nameservers=("10.0.0.3", "2001:db8::2"),
    )
    second_v4 = replace(v4.subnets[0], id="s4b", cidr="10.1.0.0/24")
    port = replace(
        v4.port,
        device_name=None,
        fixed_ips=(*v4.port.fixed_ips, FixedIp("s6", "2001:db8::7"), FixedIp("s4b", "10.1.0.9")),
    )
    dual = Vif(port=port, network=v4.network, subnets=(v4.subnets[0], second_v4, v6))
    bare = replace(make_vif(port_id="p0"), subnets=())
    other = make_vif(port_id="p2", dns_nameservers=("10.0.0.2",), mac="fa:16:3e:00:00:02")
    other = replace(other, port=replace(other.port, device_name=None, vif_type="ethernet"))

    body = network_json(make_documents, make_instance(vifs=(bare, dual, other)))
    assert body == (
        b'{"links": ['
        b'{"id": "interface0", "vif_id": "p1", "type": "ovs", "mtu": 1450, '
        b'"ethernet_mac_address": "fa:16:3e:00:00:01"}, '
        b'{"id": "interface1", "vif_id": "p2", "type": "phy", "mtu": 1450, '
        b'"ethernet_mac_address": "fa:16:3e:00:00:02"}], '
        b'"networks": ['
        b'{"id": "network0", "type": "ipv4_dhcp", "link": "interface0", '
        b'"network_id": "net-p1"}, '
        b'{"id": "network1", "type": "ipv6_slaac", "link": "interface0", '
        b'"ip_address": "2001:db8::7", "netmask": "ffff:ffff:ffff:ffff::", "routes": [], '
        b'"network_id": "net-p1", "services": [{"type": "dns", "address": "10.0.0.3"}, '
        b'{"type": "dns", "address": "2001:db8::2"}]}, '
        b'{"id": "network2", "type": "ipv4_dhcp", "link": "interface1", '
        b'"network_id": "net-p2"}], '
        b'"services": [{"type": "dns", "address": "10.0.0.2"}, '
        b'{"type": "dns", "address": "10.0.0.3"}, {"type": "dns", "address": "2001:db8::2"}]}'
    )


@pytest.mark.parametrize(
    ("vif_type", "shown"),
    [
        ("bridge", "bridge"),
        ("dvs", "dvs"),
        ("hw_veb", "hw_veb"),
        ("hyperv", "hyperv"),
        ("ovs", "ovs"),
        ("tap", "tap"),
        ("vhostuser", "vhostuser"),
        ("vif", "vif"),
        ("ethernet", "phy"),
        ("macvtap", "phy"),
        ("binding_failed", "phy"),
    ],
)
def test_link_types(make_documents, make_instance, make_vif, vif_type: str, shown: str) -> None:
    vif = make_vif()
    vif = replace(vif, port=replace(vif.port, vif_type=vif_type))
    body = network_json(make_documents, make_instance(vifs=(vif,)))
    assert f'"type": "{shown}", "mtu"'.encode() in body


def test_all_vifs_without_subnets(make_documents, make_instance, make_vif) -> None:
    bare = replace(make_vif(), subnets=())
    body = network_json(make_documents, make_instance(vifs=(bare,)))
    assert body == b'{"links": [], "networks": [], "services": []}'
