"""`metastack instance create|list|show|update|set|unset|delete`: instances with their NICs,
user data and metadata items."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import click

from metastack.client.commands import Cli, api_command, key_values, without_none

FilePath = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group()
def instance() -> None:
    """Instances."""


def _user_data(path: Path | None) -> str | None:
    return None if path is None else base64.b64encode(path.read_bytes()).decode("ascii")


def _public_key(path: Path | None) -> str | None:
    return None if path is None else path.read_text().strip()


async def _nics(
    cli: Cli, networks: tuple[str, ...], ips: tuple[str, ...], ports: tuple[str, ...]
) -> list[dict[str, str]]:
    if len(ips) > len(networks):
        raise click.BadParameter("each --ip goes with the --network before it", param_hint="--ip")
    nics: list[dict[str, str]] = []
    for index, name in enumerate(networks):
        nic = {"network_id": await cli.resolve("networks", name)}
        if index < len(ips) and ips[index]:
            nic["ip_address"] = ips[index]
        nics.append(nic)
    nics.extend({"port_id": port_id} for port_id in ports)
    return nics


@api_command(instance, "create", "Create an instance with its NICs, user data and key.")
@click.argument("name")
@click.option("--project", required=True, help="Project id.")
@click.option("--network", "networks", multiple=True, help="NIC on this network (repeatable).")
@click.option("--ip", "ips", multiple=True, help="Fixed IP of the matching --network.")
@click.option("--port", "ports", multiple=True, help="Attach this existing port (repeatable).")
@click.option("--uuid", default=None, help="Instance uuid (default: generated).")
@click.option("--user", default=None, help="User id.")
@click.option("--hostname", default=None, help="Default: derived from the name.")
@click.option("--az", default=None, help="Availability zone.")
@click.option("--flavor", default=None, help="Flavor name.")
@click.option("--image", default=None, help="Image id.")
@click.option("--kernel", default=None, help="Kernel image id.")
@click.option("--ramdisk", default=None, help="Ramdisk image id.")
@click.option("--key-name", default=None)
@click.option("--key-type", type=click.Choice(["ssh", "x509"]), default=None)
@click.option("--public-key-file", type=FilePath, default=None)
@click.option("--user-data-file", type=FilePath, default=None)
@click.option("--meta", multiple=True, help="Metadata item key=value (repeatable).")
@click.option("--security-group", "security_groups", multiple=True, help="Repeatable.")
@click.option("--launch-index", type=int, default=None)
async def instance_create(cli: Cli, name: str, **opts: Any) -> None:
    body = without_none(
        name=name,
        project_id=opts["project"],
        uuid=opts["uuid"],
        user_id=opts["user"],
        hostname=opts["hostname"],
        availability_zone=opts["az"],
        flavor_name=opts["flavor"],
        image_ref=opts["image"],
        kernel_id=opts["kernel"],
        ramdisk_id=opts["ramdisk"],
        key_name=opts["key_name"],
        key_type=opts["key_type"],
        public_key=_public_key(opts["public_key_file"]),
        user_data=_user_data(opts["user_data_file"]),
        metadata=key_values("--meta", opts["meta"]),
        security_groups=list(opts["security_groups"]) or None,
        launch_index=opts["launch_index"],
        networks=await _nics(cli, opts["networks"], opts["ips"], opts["ports"]),
    )
    cli.show(await cli.client.create("instances", body))


async def _uuid(cli: Cli, name_or_uuid: str) -> str:
    return await cli.resolve("instances", name_or_uuid)


@api_command(instance, "list", "List instances.")
@click.option("--project", default=None, help="Only this project's.")
@click.option("--name", default=None, help="Only instances with this name.")
async def instance_list(cli: Cli, project: str | None, name: str | None) -> None:
    items = await cli.client.list("instances", project_id=project, name=name)
    ports = {p["id"]: p for p in await cli.client.list("ports")} if items else {}

    def addresses(item: dict[str, Any]) -> str:
        found = [ip["ip_address"] for pid in item["ports"] for ip in ports[pid]["fixed_ips"]]
        return "\n".join(found)

    columns = [
        ("UUID", lambda i: i["uuid"]),
        ("Name", lambda i: i["name"]),
        ("Project", lambda i: i["project_id"]),
        ("Addresses", addresses),
        ("AZ", lambda i: i["availability_zone"]),
    ]
    cli.table(items, columns)


@api_command(instance, "show", "Show an instance (by uuid or name).")
@click.argument("name_or_uuid")
async def instance_show(cli: Cli, name_or_uuid: str) -> None:
    cli.show(await cli.client.show("instances", await _uuid(cli, name_or_uuid)))


@api_command(instance, "update", "Change an instance's fields.")
@click.argument("name_or_uuid")
@click.option("--name", default=None)
@click.option("--hostname", default=None)
@click.option("--az", default=None, help="Availability zone.")
@click.option("--flavor", default=None)
@click.option("--image", default=None)
@click.option("--key-name", default=None)
@click.option("--public-key-file", type=FilePath, default=None)
@click.option("--user-data-file", type=FilePath, default=None)
@click.option(
    "--meta",
    multiple=True,
    help="Replace ALL the metadata with these key=value items (repeatable); items not "
    "given are removed. To change some keys only: `instance set --property`.",
)
@click.option("--clear-password", is_flag=True, help="Forget the password the guest posted.")
async def instance_update(cli: Cli, name_or_uuid: str, **opts: Any) -> None:
    uuid = await _uuid(cli, name_or_uuid)
    body = without_none(
        name=opts["name"],
        hostname=opts["hostname"],
        availability_zone=opts["az"],
        flavor_name=opts["flavor"],
        image_ref=opts["image"],
        key_name=opts["key_name"],
        public_key=_public_key(opts["public_key_file"]),
        user_data=_user_data(opts["user_data_file"]),
        metadata=key_values("--meta", opts["meta"]) if opts["meta"] else None,
    )
    if opts["clear_password"]:
        await cli.client.request("DELETE", f"v1/instances/{uuid}/password")
    if body or not opts["clear_password"]:
        cli.show(await cli.client.update("instances", uuid, body))


@api_command(
    instance,
    "set",
    "Add or change metadata items, keeping the others (as `openstack server set --property`).",
)
@click.argument("name_or_uuid")
@click.option(
    "--property",
    "properties",
    multiple=True,
    required=True,
    help="Metadata item key=value to add or change (repeatable).",
)
async def instance_set(cli: Cli, name_or_uuid: str, properties: tuple[str, ...]) -> None:
    uuid = await _uuid(cli, name_or_uuid)
    body = {"metadata": key_values("--property", properties)}
    answer = await cli.client.request("POST", f"v1/instances/{uuid}/metadata", body=body)
    cli.show(answer["metadata"])


@api_command(
    instance,
    "unset",
    "Remove metadata items, keeping the others (as `openstack server unset --property`).",
)
@click.argument("name_or_uuid")
@click.option(
    "--property",
    "keys",
    multiple=True,
    required=True,
    help="Key of a metadata item to remove (repeatable).",
)
async def instance_unset(cli: Cli, name_or_uuid: str, keys: tuple[str, ...]) -> None:
    uuid = await _uuid(cli, name_or_uuid)
    path = f"v1/instances/{uuid}/metadata"
    answer = await cli.client.request("DELETE", path, params={"key": list(keys)})
    cli.show(answer["metadata"])


@api_command(instance, "delete", "Delete instances (and the ports created for them).")
@click.argument("names", nargs=-1, required=True)
async def instance_delete(cli: Cli, names: tuple[str, ...]) -> None:
    for name in names:
        await cli.client.delete("instances", await _uuid(cli, name))
