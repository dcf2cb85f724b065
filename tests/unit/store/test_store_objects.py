"""Networks, subnets, routers and ports in the SQL store, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from metastack.errors import Conflict, InvalidInput, NotFound
from metastack.store import ports
from metastack.store.ports import PortFilter
from metastack.store.specs import (
    FixedIpSpec,
    InterfaceAdd,
    NetworkCreate,
    NetworkUpdate,
    PortCreate,
    PortUpdate,
    ProjectCreate,
    RouterCreate,
    SubnetCreate,
    SubnetUpdate,
)
from metastack.store.sql import SqlStore


def _network(store: SqlStore, cidr: str = "10.0.0.0/24") -> tuple[str, str]:
    network = store.create_network(NetworkCreate(name="net", project_id="p1", mtu=1450))
    subnet = store.create_subnet(SubnetCreate(network_id=network.id, cidr=cidr))
    return network.id, subnet.id


def test_project_crud(sql_store: SqlStore) -> None:
    project = sql_store.create_project(ProjectCreate(id="demo", name="Demo"))
    assert sql_store.get_project("demo") == project
    assert [p.id for p in sql_store.list_projects()] == ["demo"]
    sql_store.create_network(NetworkCreate(project_id="demo"))
    with pytest.raises(Conflict):
        sql_store.delete_project("demo")
    with pytest.raises(Conflict):
        sql_store.create_project(ProjectCreate(id="demo", name="again"))


def test_network_and_subnet(sql_store: SqlStore) -> None:
    network_id, subnet_id = _network(sql_store)
    subnet = sql_store.get_subnet(subnet_id)
    assert (subnet.gateway_ip, subnet.ip_version, subnet.enable_dhcp) == ("10.0.0.1", 4, True)
    assert sql_store.get_network(network_id).subnets == [subnet_id]
    assert sql_store.update_network(network_id, NetworkUpdate(mtu=9000)).mtu == 9000
    updated = sql_store.update_subnet(
        subnet_id, SubnetUpdate(gateway_ip=None, dns_nameservers=["1.1.1.1"])
    )
    assert (updated.gateway_ip, updated.dns_nameservers) == (None, ["1.1.1.1"])
    with pytest.raises(Conflict, match="overlaps"):
        sql_store.create_subnet(SubnetCreate(network_id=network_id, cidr="10.0.0.128/25"))
    with pytest.raises(InvalidInput, match="gateway_ip"):
        sql_store.update_subnet(subnet_id, SubnetUpdate(gateway_ip="10.9.9.9"))
    with pytest.raises(NotFound, match="network_id"):
        sql_store.create_subnet(
            SubnetCreate(network_id="9b7c3a1e-0000-4000-8000-000000000000", cidr="10.1.0.0/24")
        )
    sql_store.delete_network(network_id)
    assert sql_store.list_subnets() == []
    with pytest.raises(NotFound):
        sql_store.get_subnet(subnet_id)


def test_ipv6_subnet_gateway_and_mode() -> None:
    spec = SubnetCreate(
        network_id="9b7c3a1e-0000-4000-8000-000000000000",
        cidr="fd00:1::/64",
        ipv6_address_mode="slaac",
    )
    assert spec.effective_gateway() == "fd00:1::1"
    with pytest.raises(ValidationError, match="ipv6_address_mode"):
        SubnetCreate(network_id=spec.network_id, cidr="10.0.0.0/24", ipv6_address_mode="slaac")
    with pytest.raises(ValidationError, match="CIDR"):
        SubnetCreate(network_id=spec.network_id, cidr="10.0.0.1/24")


def test_port_addresses_allocated_checked_and_unique(sql_store: SqlStore) -> None:
    network_id, subnet_id = _network(sql_store)
    first = sql_store.create_port(PortCreate(network_id=network_id))
    assert first.fixed_ips[0].ip_address == "10.0.0.2"
    assert first.mac_address.startswith("fa:16:3e:")
    assert first.project_id == "p1"
    second = sql_store.create_port(
        PortCreate(network_id=network_id, fixed_ips=[FixedIpSpec(subnet_id=subnet_id)])
    )
    assert second.fixed_ips[0].ip_address == "10.0.0.3"
    with pytest.raises(Conflict, match=r"10\.0\.0\.3"):
        sql_store.create_port(
            PortCreate(network_id=network_id, fixed_ips=[FixedIpSpec(ip_address="10.0.0.3")])
        )
    with pytest.raises(Conflict, match="mac_address"):
        sql_store.create_port(PortCreate(network_id=network_id, mac_address=first.mac_address))
    with pytest.raises(InvalidInput, match="no subnet"):
        sql_store.create_port(
            PortCreate(network_id=network_id, fixed_ips=[FixedIpSpec(ip_address="10.1.0.3")])
        )
    with pytest.raises(InvalidInput, match="not in subnet"):
        sql_store.create_port(
            PortCreate(
                network_id=network_id,
                fixed_ips=[FixedIpSpec(subnet_id=subnet_id, ip_address="10.1.0.3")],
            )
        )
    with pytest.raises(InvalidInput, match="usable"):
        sql_store.create_port(
            PortCreate(network_id=network_id, fixed_ips=[FixedIpSpec(ip_address="10.0.0.255")])
        )
    moved = sql_store.update_port(
        second.id, PortUpdate(fixed_ips=[FixedIpSpec(ip_address="10.0.0.3")], device_id="vm")
    )
    assert [ip.ip_address for ip in moved.fixed_ips] == ["10.0.0.3"]
    assert len(sql_store.list_ports()) == 2


def test_a_generated_mac_that_is_taken_is_drawn_again(
    sql_store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    network_id, _ = _network(sql_store)
    taken = sql_store.create_port(PortCreate(network_id=network_id)).mac_address
    draws = iter([taken, taken, "fa:16:3e:00:00:42"])
    monkeypatch.setattr(ports, "generate_mac", lambda: next(draws))
    assert sql_store.create_port(PortCreate(network_id=network_id)).mac_address == (
        "fa:16:3e:00:00:42"
    )
    monkeypatch.setattr(ports, "generate_mac", lambda: taken)
    with pytest.raises(Conflict, match="no free address generated in 16 tries"):
        sql_store.create_port(PortCreate(network_id=network_id))
    assert len(sql_store.list_ports(PortFilter(network_ids=[network_id]))) == 2  # none added
    # An explicitly requested MAC that is taken is still refused at once.
    with pytest.raises(Conflict, match="is already used by port"):
        sql_store.create_port(PortCreate(network_id=network_id, mac_address=taken))


def test_same_ip_on_two_networks_is_fine(sql_store: SqlStore) -> None:
    net_a, _ = _network(sql_store)
    net_b, _ = _network(sql_store)
    for network_id in (net_a, net_b):
        sql_store.create_port(
            PortCreate(
                network_id=network_id,
                mac_address="fa:16:3e:00:00:01",
                fixed_ips=[FixedIpSpec(ip_address="10.0.0.5")],
            )
        )
    found = sql_store.list_ports(PortFilter(ip_address="10.0.0.5", network_ids=[net_b]))
    assert [port.network_id for port in found] == [net_b]
    assert len(sql_store.list_ports(PortFilter(ip_address="10.0.0.5"))) == 2
    assert len(sql_store.list_ports(PortFilter(mac_address="FA:16:3E:00:00:01"))) == 2


def test_port_filters(sql_store: SqlStore) -> None:
    network_id, _ = _network(sql_store)
    sql_store.create_port(PortCreate(network_id=network_id, device_owner="network:dhcp"))
    sql_store.create_port(PortCreate(network_id=network_id, device_id="vm-1"))
    assert len(sql_store.list_ports(PortFilter(device_owners=["network:dhcp"]))) == 1
    assert len(sql_store.list_ports(PortFilter(device_ids=["vm-1", "vm-2"]))) == 1
    with pytest.raises(InvalidInput):
        sql_store.list_ports(PortFilter(ip_address="nope"))


def test_router_interfaces(sql_store: SqlStore) -> None:
    network_id, subnet_id = _network(sql_store)
    router = sql_store.create_router(RouterCreate(name="r1", project_id="p1"))
    router = sql_store.add_router_interface(router.id, InterfaceAdd(subnet_id=subnet_id))
    [interface] = router.interfaces
    assert (interface.ip_address, interface.network_id) == ("10.0.0.1", network_id)
    port = sql_store.get_port(interface.port_id)
    assert (port.device_owner, port.device_id) == ("network:router_interface", router.id)
    with pytest.raises(Conflict):
        sql_store.add_router_interface(router.id, InterfaceAdd(subnet_id=subnet_id))
    with pytest.raises(Conflict):
        sql_store.delete_router(router.id)
    with pytest.raises(Conflict):
        sql_store.delete_port(interface.port_id)
    assert sql_store.remove_router_interface(router.id, subnet_id).interfaces == []
    with pytest.raises(NotFound):
        sql_store.remove_router_interface(router.id, subnet_id)
    sql_store.delete_router(router.id)
    assert sql_store.list_routers() == []


def test_deleting_a_network_takes_its_dhcp_ports_but_not_others(sql_store: SqlStore) -> None:
    network = sql_store.create_network(NetworkCreate(name="n", project_id="p"))
    subnet = sql_store.create_subnet(
        SubnetCreate(network_id=network.id, cidr="10.1.0.0/24", ip_version=4)
    )
    dhcp = sql_store.create_port(
        PortCreate(network_id=network.id, device_owner="network:dhcp", device_id="dhcp-node")
    )
    other = sql_store.create_port(PortCreate(network_id=network.id, device_owner="compute:nova"))
    with pytest.raises(Conflict):
        sql_store.delete_network(network.id)
    sql_store.delete_port(other.id)
    revision = sql_store.current_revision()
    sql_store.delete_network(network.id)
    changes = sql_store.changes_since(revision)
    assert ("port", dhcp.id, "delete") in [(c.resource, c.resource_id, c.action) for c in changes]
    with pytest.raises(NotFound):
        sql_store.get_port(dhcp.id)
    with pytest.raises(NotFound):
        sql_store.get_subnet(subnet.id)
