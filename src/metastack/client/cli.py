"""`metastack project|network|subnet|router|port ...`: openstack-client style resource commands."""

from __future__ import annotations

from typing import Any

import click

from metastack.client.commands import Cli, api_command, host_route, without_none
from metastack.client.instance_cli import instance
from metastack.client.output import field, fixed_ips


@click.group()
def project() -> None:
    """Projects."""


@api_command(project, "create", "Create a project.")
@click.argument("name")
@click.option("--id", "project_id", help="Project id (default: generated).")
@click.option("--description", default=None)
async def project_create(
    cli: Cli, name: str, project_id: str | None, description: str | None
) -> None:
    body = without_none(name=name, id=project_id, description=description)
    cli.show(await cli.client.create("projects", body))


@api_command(project, "list", "List projects.")
async def project_list(cli: Cli) -> None:
    columns = [("ID", field("id")), ("Name", field("name")), ("Description", field("description"))]
    cli.table(await cli.client.list("projects"), columns)


@api_command(project, "show", "Show a project.")
@click.argument("project_id")
async def project_show(cli: Cli, project_id: str) -> None:
    cli.show(await cli.client.show("projects", project_id))


@api_command(project, "delete", "Delete projects.")
@click.argument("project_ids", nargs=-1, required=True)
async def project_delete(cli: Cli, project_ids: tuple[str, ...]) -> None:
    for project_id in project_ids:
        await cli.client.delete("projects", project_id)


@click.group()
def network() -> None:
    """Networks."""


@api_command(network, "create", "Create a network.")
@click.argument("name")
@click.option("--project", required=True, help="Project id.")
@click.option("--mtu", type=int, default=None)
@click.option("--id", "network_id", default=None, help="Network uuid (default: generated).")
async def network_create(
    cli: Cli, name: str, project: str, mtu: int | None, network_id: str | None
) -> None:
    body = without_none(name=name, project_id=project, mtu=mtu, id=network_id)
    cli.show(await cli.client.create("networks", body))


@api_command(network, "list", "List networks.")
@click.option("--project", default=None, help="Only this project's.")
async def network_list(cli: Cli, project: str | None) -> None:
    columns = [
        ("ID", field("id")),
        ("Name", field("name")),
        ("Project", field("project_id")),
        ("MTU", field("mtu")),
        ("Subnets", lambda n: "\n".join(n["subnets"])),
    ]
    cli.table(await cli.client.list("networks", project_id=project), columns)


@api_command(network, "show", "Show a network (by id or name).")
@click.argument("name_or_id")
async def network_show(cli: Cli, name_or_id: str) -> None:
    cli.show(await cli.client.show("networks", await cli.resolve("networks", name_or_id)))


@api_command(network, "delete", "Delete networks (by id or name).")
@click.argument("names", nargs=-1, required=True)
async def network_delete(cli: Cli, names: tuple[str, ...]) -> None:
    for name in names:
        await cli.client.delete("networks", await cli.resolve("networks", name))


@network.group("agent")
def network_agent() -> None:
    """Network agents: the network nodes and what is scheduled to them."""


def _alive(agent: dict[str, Any]) -> str:
    return ":-)" if agent.get("alive") else "XXX"  # as `openstack network agent list`


AGENT_COLUMNS = [
    ("ID", field("id")),
    ("Host", field("host")),
    ("Capabilities", lambda a: ", ".join(a["capabilities"])),
    ("Alive", _alive),
    ("Heartbeat", field("heartbeat_at")),
    ("Networks", lambda a: len(a["networks"])),
    ("Routers", lambda a: len(a["routers"])),
]


@api_command(network_agent, "list", "List network agents, alive or not.")
@click.option("--host", default=None, help="Only the agent of this host.")
async def network_agent_list(cli: Cli, host: str | None) -> None:
    cli.table(await cli.client.list("agents", host=host), AGENT_COLUMNS)


async def _agent_id(cli: Cli, host_or_id: str) -> str:
    found = await cli.client.list("agents", host=host_or_id)
    return str(found[0]["id"]) if found else host_or_id


@api_command(network_agent, "show", "Show a network agent (by host or id).")
@click.argument("host_or_id")
async def network_agent_show(cli: Cli, host_or_id: str) -> None:
    cli.show(await cli.client.show("agents", await _agent_id(cli, host_or_id)))


@api_command(network_agent, "delete", "Delete network agents (by host or id).")
@click.argument("hosts_or_ids", nargs=-1, required=True)
async def network_agent_delete(cli: Cli, hosts_or_ids: tuple[str, ...]) -> None:
    for host_or_id in hosts_or_ids:
        await cli.client.delete("agents", await _agent_id(cli, host_or_id))


@click.group()
def subnet() -> None:
    """Subnets."""


@api_command(subnet, "create", "Create a subnet on a network.")
@click.argument("name", required=False, default="")
@click.option("--network", required=True, help="Network id or name.")
@click.option("--cidr", required=True, help="e.g. 10.0.0.0/24 or fd00::/64.")
@click.option("--gateway", default=None, help="Gateway IP, or 'none' (default: first address).")
@click.option("--dns", "dns", multiple=True, help="DNS server (repeatable).")
@click.option("--host-route", "routes", multiple=True, help="destination=CIDR,nexthop=IP.")
@click.option("--no-dhcp", is_flag=True, help="Disable DHCP.")
@click.option(
    "--ipv6-address-mode", type=click.Choice(["slaac", "dhcpv6-stateful", "dhcpv6-stateless"])
)
@click.option("--id", "subnet_id", default=None, help="Subnet uuid (default: generated).")
async def subnet_create(
    cli: Cli,
    name: str,
    network: str,
    cidr: str,
    gateway: str | None,
    dns: tuple[str, ...],
    routes: tuple[str, ...],
    no_dhcp: bool,
    ipv6_address_mode: str | None,
    subnet_id: str | None,
) -> None:
    body = without_none(
        id=subnet_id,
        name=name,
        network_id=await cli.resolve("networks", network),
        cidr=cidr,
        dns_nameservers=list(dns),
        host_routes=[host_route(route) for route in routes],
        enable_dhcp=not no_dhcp,
        ipv6_address_mode=ipv6_address_mode,
    )
    if gateway is not None:
        body["gateway_ip"] = None if gateway.lower() == "none" else gateway
    cli.show(await cli.client.create("subnets", body))


@api_command(subnet, "list", "List subnets.")
@click.option("--network", default=None, help="Only this network's (id or name).")
async def subnet_list(cli: Cli, network: str | None) -> None:
    network_id = await cli.resolve("networks", network) if network else None
    columns = [
        ("ID", field("id")),
        ("Name", field("name")),
        ("Network", field("network_id")),
        ("CIDR", field("cidr")),
        ("Gateway", field("gateway_ip")),
    ]
    cli.table(await cli.client.list("subnets", network_id=network_id), columns)


@api_command(subnet, "show", "Show a subnet (by id or name).")
@click.argument("name_or_id")
async def subnet_show(cli: Cli, name_or_id: str) -> None:
    cli.show(await cli.client.show("subnets", await cli.resolve("subnets", name_or_id)))


@api_command(subnet, "delete", "Delete subnets (by id or name).")
@click.argument("names", nargs=-1, required=True)
async def subnet_delete(cli: Cli, names: tuple[str, ...]) -> None:
    for name in names:
        await cli.client.delete("subnets", await cli.resolve("subnets", name))


@click.group()
def router() -> None:
    """Routers and their interfaces."""


ROUTER_COLUMNS = [
    ("ID", field("id")),
    ("Name", field("name")),
    ("Project", field("project_id")),
    ("Interfaces", lambda r: "\n".join(i["ip_address"] for i in r["interfaces"])),
]


@api_command(router, "create", "Create a router.")
@click.argument("name")
@click.option("--project", required=True, help="Project id.")
@click.option("--id", "router_id", default=None, help="Router uuid (default: generated).")
async def router_create(cli: Cli, name: str, project: str, router_id: str | None) -> None:
    body = without_none(name=name, project_id=project, id=router_id)
    cli.show(await cli.client.create("routers", body))


@api_command(router, "list", "List routers.")
@click.option("--project", default=None, help="Only this project's.")
async def router_list(cli: Cli, project: str | None) -> None:
    cli.table(await cli.client.list("routers", project_id=project), ROUTER_COLUMNS)


@api_command(router, "show", "Show a router and its interfaces.")
@click.argument("name_or_id")
async def router_show(cli: Cli, name_or_id: str) -> None:
    cli.show(await cli.client.show("routers", await cli.resolve("routers", name_or_id)))


@api_command(router, "delete", "Delete routers (their interfaces must be removed first).")
@click.argument("names", nargs=-1, required=True)
async def router_delete(cli: Cli, names: tuple[str, ...]) -> None:
    for name in names:
        await cli.client.delete("routers", await cli.resolve("routers", name))


@api_command(router, "add-subnet", "Attach a router to a subnet (gateway IP by default).")
@click.argument("router_name")
@click.argument("subnet_name")
@click.option("--ip", default=None, help="Interface address (default: the subnet's gateway).")
async def router_add_subnet(cli: Cli, router_name: str, subnet_name: str, ip: str | None) -> None:
    router_id = await cli.resolve("routers", router_name)
    body = without_none(subnet_id=await cli.resolve("subnets", subnet_name), ip_address=ip)
    cli.show(await cli.client.request("POST", f"v1/routers/{router_id}/interfaces", body=body))


@api_command(router, "remove-subnet", "Detach a router from a subnet.")
@click.argument("router_name")
@click.argument("subnet_name")
async def router_remove_subnet(cli: Cli, router_name: str, subnet_name: str) -> None:
    router_id = await cli.resolve("routers", router_name)
    subnet_id = await cli.resolve("subnets", subnet_name)
    await cli.client.request("DELETE", f"v1/routers/{router_id}/interfaces/{subnet_id}")


@click.group()
def port() -> None:
    """Ports."""


PORT_COLUMNS = [
    ("ID", field("id")),
    ("Network", field("network_id")),
    ("MAC", field("mac_address")),
    ("Fixed IPs", fixed_ips),
    ("Device", field("device_id")),
    ("Owner", field("device_owner")),
]


@api_command(port, "create", "Create a port (MAC and address allocated unless given).")
@click.option("--network", required=True, help="Network id or name.")
@click.option("--ip", "ips", multiple=True, help="Fixed IP (repeatable).")
@click.option("--mac", default=None)
@click.option("--device-id", default=None)
@click.option("--device-owner", default=None, help="e.g. network:dhcp, compute:nova.")
@click.option("--floating-ip", default=None)
@click.option("--project", default=None, help="Project id (default: the network's).")
@click.option("--id", "port_id", default=None, help="Port uuid (default: generated).")
async def port_create(
    cli: Cli,
    network: str,
    ips: tuple[str, ...],
    mac: str | None,
    device_id: str | None,
    device_owner: str | None,
    floating_ip: str | None,
    project: str | None,
    port_id: str | None,
) -> None:
    body = without_none(
        id=port_id,
        network_id=await cli.resolve("networks", network),
        project_id=project,
        mac_address=mac,
        fixed_ips=[{"ip_address": ip} for ip in ips] or None,
        device_id=device_id,
        device_owner=device_owner,
        floating_ip=floating_ip,
    )
    cli.show(await cli.client.create("ports", body))


@api_command(port, "list", "List ports.")
@click.option("--network", default=None, help="Only on this network (id or name).")
@click.option("--ip", default=None, help="Only with this fixed IP.")
@click.option("--mac", default=None, help="Only with this MAC.")
@click.option("--device-id", default=None)
@click.option("--device-owner", default=None)
async def port_list(
    cli: Cli,
    network: str | None,
    ip: str | None,
    mac: str | None,
    device_id: str | None,
    device_owner: str | None,
) -> None:
    filters = without_none(
        network_id=await cli.resolve("networks", network) if network else None,
        ip_address=ip,
        mac_address=mac,
        device_id=device_id,
        device_owner=device_owner,
    )
    cli.table(await cli.client.list("ports", **filters), PORT_COLUMNS)


@api_command(port, "show", "Show a port.")
@click.argument("port_id")
async def port_show(cli: Cli, port_id: str) -> None:
    cli.show(await cli.client.show("ports", port_id))


@api_command(port, "delete", "Delete ports.")
@click.argument("port_ids", nargs=-1, required=True)
async def port_delete(cli: Cli, port_ids: tuple[str, ...]) -> None:
    for port_id in port_ids:
        await cli.client.delete("ports", port_id)


def register(main: click.Group) -> None:
    """Add the resource command groups to the `metastack` command."""
    for group in (project, network, subnet, router, port, instance):
        main.add_command(group)
