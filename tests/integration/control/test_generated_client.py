"""A client generated from the served /openapi.json by openapi-python-client (its CLI, once per
session, into a temporary directory) drives a real control API through every operation:
create, list, show, update and delete of each resource, router interfaces, instance
metadata and password, the change feed, agents and their networks; the answers are parsed
into the generated models."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from metastack.api.control import make_control_app
from metastack.config import ApiConfig
from metastack.store.sql import SqlStore
from support.serving import serving

from .conftest import ApiFactory

PACKAGE = "metastack_control_client"
TOKEN = "generated-client-token"
GENERATE_TIMEOUT = 120


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package, generated from a served document with --fail-on-warning (any
    part of the document the generator cannot express fails here), then imported."""
    out = tmp_path_factory.mktemp("generated")
    config = out / "config.yaml"
    config.write_text("post_hooks: []\n")  # no formatter run: the code only has to import
    store = SqlStore("sqlite://")
    app = make_control_app(ApiConfig.model_validate({"database_url": "sqlite://"}), store)
    with serving(app) as port:
        command = [
            *(sys.executable, "-m", "openapi_python_client", "generate"),
            *("--url", f"http://127.0.0.1:{port}/openapi.json"),
            *("--meta", "none", "--output-path", str(out / PACKAGE)),
            *("--config", str(config), "--fail-on-warning"),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=GENERATE_TIMEOUT)
    store.close()
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@dataclass
class Generated:
    """Calls of the generated client: `await call("networks", "create_network", ...)`."""

    package: ModuleType
    client: Any

    def model(self, name: str) -> Any:
        return getattr(importlib.import_module(f"{PACKAGE}.models"), name)

    async def call(self, tag: str, operation: str, status: int = 200, **kwargs: Any) -> Any:
        module = importlib.import_module(f"{PACKAGE}.api.{tag}.{operation}")
        response = await module.asyncio_detailed(client=self.client, **kwargs)
        assert response.status_code == status, (operation, response.content)
        return response.parsed


def _path(directory: Path, name: str) -> Path:
    return directory / f"{name}.py"


def test_operations_are_modules_named_as_calls(generated: ModuleType) -> None:
    root = Path(generated.__file__).parent / "api"
    assert {p.name for p in root.iterdir() if p.is_dir()} >= {
        "projects", "networks", "subnets", "routers", "ports", "instances", "changes", "agents",
    }  # fmt: skip
    calls = ("create_network", "list_networks", "get_network", "update_network", "delete_network")
    for verb in calls:
        assert _path(root / "networks", verb).exists()
    assert _path(root / "routers", "add_router_interface").exists()
    assert _path(root / "instances", "set_instance_metadata").exists()
    for verb in ("list_agents", "get_agent", "set_agent_state", "delete_agent"):
        assert _path(root / "agents", verb).exists()
    assert not list(root.rglob("*_v1_*"))  # no names spelled from the paths


async def test_generated_client_drives_every_resource(
    start_api: ApiFactory, generated: ModuleType
) -> None:
    api = await start_api(admin_token=TOKEN)
    client = generated.AuthenticatedClient(
        base_url=api.base, token=TOKEN, prefix="", auth_header_name="X-Auth-Token"
    )
    async with client:
        g = Generated(generated, client)
        await _projects(g)
        network_id, subnet_id = await _networks_and_subnets(g)
        await _routers(g, subnet_id)
        await _ports(g, network_id, subnet_id)
        await _instances(g, network_id)
        body = g.model("SubnetUpdate")(gateway_ip=None)  # an explicit null clears it
        cleared = await g.call("subnets", "update_subnet", id=subnet_id, body=body)
        assert (cleared.gateway_ip, cleared.name) == (None, "sub2")
        await g.call("subnets", "delete_subnet", 204, id=subnet_id)
        await g.call("networks", "delete_network", 204, id=network_id)
        missing = await g.call("networks", "get_network", 404, id=network_id)
        assert isinstance(missing, g.model("Error")) and network_id in missing.error
        assert (await g.call("subnets", "list_subnets")).subnets == []
        await _changes(g)
        await _agents(g)
    anonymous = generated.Client(base_url=api.base)
    async with anonymous:
        refused = await Generated(generated, anonymous).call("projects", "list_projects", 401)
        assert "X-Auth-Token" in refused.error


async def _projects(g: Generated) -> None:
    body = g.model("ProjectCreate")(name="team a", id="team-a", description="the a team")
    created = await g.call("projects", "create_project", 201, body=body)
    assert (created.id, created.name, created.description) == ("team-a", "team a", "the a team")
    assert isinstance(created.created_at, datetime)
    listed = await g.call("projects", "list_projects")
    assert [p.id for p in listed.projects] == ["team-a"]
    shown = await g.call("projects", "get_project", id="team-a")
    assert (shown.name, shown.created_at) == ("team a", created.created_at)
    body = g.model("ProjectUpdate")(name="team b")
    updated = await g.call("projects", "update_project", id="team-a", body=body)
    assert (updated.name, updated.description) == ("team b", "the a team")  # left out: kept
    await g.call("projects", "delete_project", 204, id="team-a")
    assert (await g.call("projects", "list_projects")).projects == []


async def _networks_and_subnets(g: Generated) -> tuple[str, str]:
    body = g.model("NetworkCreate")(name="net1", project_id="p1", mtu=1450)
    network = await g.call("networks", "create_network", 201, body=body)
    assert (network.name, network.project_id, network.mtu, network.subnets) == (
        "net1",
        "p1",
        1450,
        [],
    )
    listed = await g.call("networks", "list_networks", name="net1")
    assert [n.id for n in listed.networks] == [network.id]
    assert (await g.call("networks", "list_networks", name="other")).networks == []
    updated = await g.call(
        "networks", "update_network", id=network.id, body=g.model("NetworkUpdate")(mtu=1400)
    )
    assert (updated.name, updated.mtu) == ("net1", 1400)

    route = g.model("HostRouteSpec")(destination="10.8.0.0/16", nexthop="10.0.0.254")
    body = g.model("SubnetCreate")(
        network_id=network.id,
        name="sub1",
        cidr="10.0.0.0/24",
        dns_nameservers=["10.0.0.2"],
        host_routes=[route],
    )
    subnet = await g.call("subnets", "create_subnet", 201, body=body)
    assert (subnet.network_id, subnet.cidr, subnet.ip_version) == (network.id, "10.0.0.0/24", 4)
    assert (subnet.gateway_ip, subnet.dns_nameservers, subnet.enable_dhcp) == (
        "10.0.0.1",
        ["10.0.0.2"],
        True,
    )
    assert [(r.destination, r.nexthop) for r in subnet.host_routes] == [
        ("10.8.0.0/16", "10.0.0.254")
    ]
    listed = await g.call("subnets", "list_subnets", network_id=[network.id])
    assert [s.id for s in listed.subnets] == [subnet.id]
    shown = await g.call("networks", "get_network", id=network.id)
    assert shown.subnets == [subnet.id]
    renamed = await g.call(
        "subnets", "update_subnet", id=subnet.id, body=g.model("SubnetUpdate")(name="sub2")
    )
    assert (renamed.name, renamed.gateway_ip) == ("sub2", "10.0.0.1")  # gateway not sent
    shown = await g.call("subnets", "get_subnet", id=subnet.id)
    assert (shown.name, shown.gateway_ip, shown.dns_nameservers) == (
        "sub2",
        "10.0.0.1",
        ["10.0.0.2"],
    )
    return str(network.id), str(subnet.id)


async def _routers(g: Generated, subnet_id: str) -> None:
    body = g.model("RouterCreate")(name="r1", project_id="p1")
    router = await g.call("routers", "create_router", 201, body=body)
    assert (router.name, router.project_id, router.interfaces) == ("r1", "p1", [])
    listed = await g.call("routers", "list_routers", project_id="p1")
    assert [r.id for r in listed.routers] == [router.id]
    updated = await g.call(
        "routers", "update_router", id=router.id, body=g.model("RouterUpdate")(name="r2")
    )
    assert updated.name == "r2"
    body = g.model("InterfaceAdd")(subnet_id=subnet_id)
    attached = await g.call("routers", "add_router_interface", 201, id=router.id, body=body)
    [interface] = attached.interfaces
    assert (interface.subnet_id, interface.ip_address) == (subnet_id, "10.0.0.1")
    shown = await g.call("routers", "get_router", id=router.id)
    assert [i.port_id for i in shown.interfaces] == [interface.port_id]
    await g.call("routers", "remove_router_interface", 204, id=router.id, subnet_id=subnet_id)
    assert (await g.call("routers", "get_router", id=router.id)).interfaces == []
    await g.call("routers", "delete_router", 204, id=router.id)
    assert (await g.call("routers", "list_routers")).routers == []


async def _ports(g: Generated, network_id: str, subnet_id: str) -> None:
    fixed = g.model("FixedIpSpec")(ip_address="10.0.0.20")
    body = g.model("PortCreate")(
        network_id=network_id, fixed_ips=[fixed], mac_address="fa:16:3e:00:00:20"
    )
    port = await g.call("ports", "create_port", 201, body=body)
    assert (port.network_id, port.project_id, port.mac_address) == (
        network_id,
        "p1",
        "fa:16:3e:00:00:20",
    )
    assert [(ip.subnet_id, ip.ip_address) for ip in port.fixed_ips] == [(subnet_id, "10.0.0.20")]
    assert (port.device_id, port.floating_ip, port.vif_type) == ("", None, "bridge")
    listed = await g.call("ports", "list_ports", ip_address="10.0.0.20")
    assert [p.id for p in listed.ports] == [port.id]
    body = g.model("PortUpdate")(device_owner="test:owner", floating_ip="192.0.2.7")
    updated = await g.call("ports", "update_port", id=port.id, body=body)
    assert (updated.device_owner, updated.floating_ip) == ("test:owner", "192.0.2.7")
    assert updated.mac_address == "fa:16:3e:00:00:20"
    shown = await g.call("ports", "get_port", id=port.id)
    assert (shown.device_owner, shown.floating_ip) == ("test:owner", "192.0.2.7")
    await g.call("ports", "delete_port", 204, id=port.id)
    assert (await g.call("ports", "list_ports", network_id=[network_id])).ports == []


async def _instances(g: Generated, network_id: str) -> None:
    metadata = g.model("InstanceCreateMetadata").from_dict({"role": "web", "tier": "1"})
    nic = g.model("NetworkAttach")(network_id=network_id, ip_address="10.0.0.5")
    body = g.model("InstanceCreate")(
        name="vm 1",
        project_id="p1",
        user_data="I2Nsb3VkLWNvbmZpZwo=",
        key_name="k",
        public_key="ssh-ed25519 AAAA test",
        metadata=metadata,
        networks=[nic],
    )
    created = await g.call("instances", "create_instance", 201, body=body)
    uuid = created.uuid
    assert (created.name, created.hostname, created.project_id) == ("vm 1", "vm-1", "p1")
    assert (created.user_data, created.key_name, created.availability_zone) == (
        "I2Nsb3VkLWNvbmZpZwo=",
        "k",
        "nova",
    )
    assert created.metadata.to_dict() == {"role": "web", "tier": "1"}
    assert created.ec2_id.startswith("i-") and len(created.ports) == 1
    listed = await g.call("instances", "list_instances", name="vm 1")
    assert [i.uuid for i in listed.instances] == [uuid]
    shown = await g.call("instances", "get_instance", id=uuid)
    assert (shown.uuid, shown.ports, shown.revision) == (uuid, created.ports, created.revision)

    body = g.model("InstanceUpdate")(hostname="renamed")
    updated = await g.call("instances", "update_instance", id=uuid, body=body)
    assert (updated.hostname, updated.key_name) == ("renamed", "k")  # left out: kept
    assert updated.metadata.to_dict() == {"role": "web", "tier": "1"}
    assert updated.revision > created.revision

    items = g.model("InstanceMetadataSetMetadata").from_dict({"tier": "2", "env": "prod"})
    body = g.model("InstanceMetadataSet")(metadata=items)
    merged = await g.call("instances", "set_instance_metadata", id=uuid, body=body)
    assert merged.metadata.to_dict() == {"role": "web", "tier": "2", "env": "prod"}
    remaining = await g.call("instances", "delete_instance_metadata", id=uuid, key=["role", "env"])
    assert remaining.metadata.to_dict() == {"tier": "2"}
    shown = await g.call("instances", "get_instance_metadata", id=uuid)
    assert shown.metadata.to_dict() == {"tier": "2"}
    absent = await g.call("instances", "delete_instance_metadata", 404, id=uuid, key=["nope"])
    assert "nope" in absent.error

    password = await g.call("instances", "get_instance_password", id=uuid)
    assert password.password == ""
    await g.call("instances", "clear_instance_password", 204, id=uuid)
    await g.call("instances", "delete_instance", 204, id=uuid)
    assert (await g.call("instances", "list_instances")).instances == []


async def _changes(g: Generated) -> None:
    feed = await g.call("changes", "list_changes", since=0, limit=1000)
    assert feed.revision == len(feed.changes) > 0
    seen = {(c.resource.value, c.action.value) for c in feed.changes}
    for resource in ("project", "network", "subnet", "router", "port", "instance"):
        assert (resource, "create") in seen and (resource, "delete") in seen, resource
    assert ("instance", "update") in seen
    assert [c.revision for c in feed.changes] == sorted(c.revision for c in feed.changes)
    later = await g.call("changes", "list_changes", since=feed.revision, wait=0.05)
    assert (later.revision, later.changes) == (feed.revision, [])


async def _agents(g: Generated) -> None:
    body = g.model("AgentReport").from_dict({"host": "node-1", "capabilities": ["dhcp", "l3"]})
    agent = await g.call("agents", "set_agent_state", body=body)
    assert (agent.host, agent.alive, [c.value for c in agent.capabilities]) == (
        "node-1",
        True,
        ["dhcp", "l3"],
    )
    assert isinstance(agent.heartbeat_at, datetime)
    body = g.model("NetworkCreate")(name="scheduled", project_id="p1")
    network = await g.call("networks", "create_network", 201, body=body)
    assert network.dhcp_agents == [agent.id]
    listed = await g.call("agents", "list_agents")
    assert [(a.host, a.networks, a.routers) for a in listed.agents] == [
        ("node-1", [network.id], [])
    ]
    assert (await g.call("agents", "list_agents", host="node-2")).agents == []
    shown = await g.call("agents", "get_agent", id=agent.id)
    assert (shown.id, shown.networks) == (agent.id, [network.id])
    await g.call("networks", "delete_network", 204, id=network.id)
    await g.call("agents", "delete_agent", 204, id=agent.id)
    missing = await g.call("agents", "get_agent", 404, id=agent.id)
    assert agent.id in missing.error
