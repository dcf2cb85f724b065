"""The resource CLI driven through click's CliRunner against a live control API."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from metastack.cli import main

from .conftest import Api, ApiFactory


async def run(api: Api, *args: str, env: dict[str, str] | None = None) -> Result:
    """Invoke `metastack ARGS` in a thread (it runs its own event loop) against `api`."""
    runner = CliRunner()
    full = [*args, "--url", api.base] if env is None else list(args)
    return await asyncio.to_thread(runner.invoke, main, full, env=env)


async def ok(api: Api, *args: str) -> str:
    result = await run(api, *args)
    assert result.exit_code == 0, result.output
    return result.stdout


async def ok_json(api: Api, *args: str) -> Any:
    result = await run(api, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def test_build_a_topology_and_an_instance(api: Api, tmp_path: Path) -> None:
    network = await ok_json(api, "network", "create", "net1", "--project", "demo", "--mtu", "1450")
    assert (network["name"], network["mtu"]) == ("net1", 1450)
    subnet = await ok_json(
        api, "subnet", "create", "sub1", "--network", "net1", "--cidr", "10.0.0.0/24",
        "--dns", "10.0.0.2", "--host-route", "destination=10.8.0.0/16,nexthop=10.0.0.254",
    )  # fmt: skip
    assert subnet["network_id"] == network["id"] and subnet["dns_nameservers"] == ["10.0.0.2"]
    assert subnet["host_routes"] == [{"destination": "10.8.0.0/16", "nexthop": "10.0.0.254"}]
    await ok_json(api, "router", "create", "r1", "--project", "demo")
    router = await ok_json(api, "router", "add-subnet", "r1", "sub1")
    assert router["interfaces"][0]["ip_address"] == "10.0.0.1"

    user_data = tmp_path / "user-data"
    user_data.write_bytes(b"#cloud-config\nhostname: x\n")
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3 test@example\n")
    created = await ok_json(
        api, "instance", "create", "vm 1", "--project", "demo", "--network", "net1",
        "--ip", "10.0.0.5", "--user-data-file", str(user_data), "--key-name", "mykey",
        "--public-key-file", str(key), "--meta", "role=web", "--meta", "a=b=c", "--az", "az1",
        "--flavor", "m1.tiny", "--image", "img-1",
    )  # fmt: skip
    assert base64.b64decode(created["user_data"]) == b"#cloud-config\nhostname: x\n"
    assert created["metadata"] == {"role": "web", "a": "b=c"}
    assert (created["public_key"], created["hostname"]) == (
        "ssh-ed25519 AAAAC3 test@example",
        "vm-1",
    )
    shown = await ok_json(api, "instance", "show", created["uuid"])
    assert shown["uuid"] == created["uuid"]
    [port] = await ok_json(api, "port", "list", "--ip", "10.0.0.5")
    assert port["device_id"] == created["uuid"]

    table = await run(api, "instance", "list")
    assert table.exit_code == 0 and "vm 1" in table.stdout and "10.0.0.5" in table.stdout
    assert "net1" in (await run(api, "network", "list")).stdout
    updated = await ok_json(api, "instance", "update", "vm 1", "--meta", "role=db")
    assert updated["metadata"] == {"role": "db"}

    await ok(api, "instance", "delete", "vm 1")
    await ok(api, "router", "remove-subnet", "r1", "sub1")
    await ok(api, "router", "delete", "r1")
    await ok(api, "network", "delete", "net1")
    assert await ok_json(api, "network", "list") == []


async def test_errors_exit_1_with_status_and_message(api: Api) -> None:
    await ok_json(api, "network", "create", "n", "--project", "demo")
    await ok_json(api, "subnet", "create", "--network", "n", "--cidr", "10.0.0.0/24")
    await ok_json(api, "port", "create", "--network", "n", "--ip", "10.0.0.9")
    result = await run(api, "port", "create", "--network", "n", "--ip", "10.0.0.9")
    assert result.exit_code == 1
    assert result.stderr.startswith("metastack: 409 ip_address")
    missing = await run(api, "network", "show", "nope")
    assert (missing.exit_code, missing.stderr.strip()) == (
        1,
        "metastack: 404 no network named 'nope'",
    )
    bad = await run(api, "subnet", "create", "--network", "n", "--cidr", "banana")
    assert bad.exit_code == 1 and bad.stderr.startswith("metastack: 400 cidr")


async def test_token_and_environment(start_api: ApiFactory) -> None:
    api = await start_api(admin_token="t0ken")
    env = {"METASTACK_URL": api.base, "METASTACK_TOKEN": "t0ken"}
    assert (await run(api, "project", "list", env=env)).exit_code == 0
    denied = await run(api, "project", "list", env={"METASTACK_URL": api.base})
    assert denied.exit_code == 1 and denied.stderr.startswith("metastack: 401")


async def test_unreachable_api(api: Api) -> None:
    result = await run(api, "network", "list", env={"METASTACK_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 1 and "metastack: cannot reach" in result.stderr


async def test_instance_set_and_unset_properties(api: Api) -> None:
    created = await ok_json(
        api, "instance", "create", "vm1", "--project", "demo", "--meta", "role=web",
        "--meta", "tier=1",
    )  # fmt: skip
    merged = await ok_json(
        api, "instance", "set", "vm1", "--property", "tier=2", "--property", "env=a=b"
    )
    assert merged == {"role": "web", "tier": "2", "env": "a=b"}
    shown = await ok_json(api, "instance", "show", created["uuid"])
    assert shown["metadata"] == {"role": "web", "tier": "2", "env": "a=b"}
    table = await ok(api, "instance", "set", "vm1", "--property", "zone=z1")
    assert "| zone " in table and "| role " in table

    remaining = await ok_json(
        api, "instance", "unset", "vm1", "--property", "role", "--property", "tier"
    )
    assert remaining == {"env": "a=b", "zone": "z1"}
    missing = await run(api, "instance", "unset", "vm1", "--property", "env", "--property", "nope")
    assert missing.exit_code == 1 and missing.stderr.startswith("metastack: 404 metadata:")
    too_long = await run(api, "instance", "set", "vm1", "--property", "k=" + "v" * 256)
    assert too_long.exit_code == 1 and "longer than 255 characters" in too_long.stderr
    not_pair = await run(api, "instance", "set", "vm1", "--property", "novalue")
    assert not_pair.exit_code == 2 and "is not key=value" in not_pair.stderr
    assert (await ok_json(api, "instance", "show", "vm1"))["metadata"] == {
        "env": "a=b",
        "zone": "z1",
    }


async def test_update_meta_help_says_it_replaces(api: Api) -> None:
    result = await run(api, "instance", "update", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "Replace ALL the metadata" in text and "instance set --property" in text
