"""The interop world: the same instances behind five chains, each reached from its own guests.

Chains (proxy -> agent -> metadata API), each in its own copy of one topology (two
projects' networks with the same CIDR, each with a DHCP and a router namespace, guests
on both metadata paths, and a guest whose address no port holds):

    upstream   haproxy (neutron's config)  -> neutron's agent -> nova's API
    a          our proxy                   -> neutron's agent -> our API
    b          our proxy                   -> our agent       -> nova's API
    c          haproxy (neutron's config)  -> our agent       -> our API
    metastack  our proxy                   -> our agent       -> our API

The instances are created once, in our store, through the control API; nova is given the
same instances (tests/interop/novadata.py) and neutron's agent the same ports. Every
process, namespace and file is removed at the end, also after a failure.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from metastack.lab import Lab
from metastack.lab.chain import Chain
from metastack.lab.topology import DhcpNamespace, RouterNamespace
from metastack.lab.upstream import (
    HaproxySite,
    Service,
    neutron_haproxy_configs,
    neutron_ports,
    nova_ready,
    start_haproxy,
    start_neutron_agent,
    start_nova_metadata,
    stop_pid,
    unix_ready,
    write_json,
)

from .novadata import nova_instance

CIDR = "10.78.0.0/24"
CHAINS = ("upstream", "a", "b", "c", "metastack")
DESCRIPTION = {
    "upstream": "haproxy -> neutron agent -> nova API",
    "a": "our proxy -> neutron agent -> our API",
    "b": "our proxy -> our agent -> nova API",
    "c": "haproxy -> our agent -> our API",
    "metastack": "our proxy -> our agent -> our API",
}
VENDOR_DATA = {"cloud": "interop", "regions": ["one", "two"], "nested": {"ok": True, "n": 3}}
PASSWORD = "c2VjcmV0LXBhc3N3b3JkLWVuY3J5cHRlZC1ieS10aGUtZ3Vlc3Q="


@dataclass(frozen=True)
class GuestPlan:
    key: str
    network: Literal["a", "b"]
    host: int
    path: Literal["dhcp", "router"]
    has_instance: bool


GUESTS = (
    GuestPlan("a_dhcp", "a", 5, "dhcp", True),
    GuestPlan("a_router", "a", 6, "router", True),
    GuestPlan("b_dhcp", "b", 5, "dhcp", True),  # the same address as a_dhcp
    GuestPlan("b_router", "b", 6, "router", True),  # the same address as a_router
    GuestPlan("a_orphan", "a", 9, "dhcp", False),  # an address no port holds
)


@dataclass(frozen=True)
class Answer:
    status: int  # HTTP status; -1: no HTTP answer (curl's error in `body`)
    content_type: str
    body: bytes
    server: str = ""  # the Server header: tells which metadata API answered


@dataclass
class Site:
    """One copy of the topology and the chain its guests reach."""

    chain: str
    lab: Lab
    guests: dict[str, str] = field(default_factory=dict)  # guest key -> namespace
    dhcp: dict[str, DhcpNamespace] = field(default_factory=dict)
    routers: dict[str, RouterNamespace] = field(default_factory=dict)


@dataclass
class World:
    workdir: Path
    ours: Chain
    networks: dict[str, str] = field(default_factory=dict)  # a/b/c -> network id
    routers: dict[str, str] = field(default_factory=dict)  # a/b -> router id
    projects: dict[str, str] = field(default_factory=dict)
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)  # guest key -> instance
    sites: dict[str, Site] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)
    chains: list[Chain] = field(default_factory=list)  # our other agents and proxies
    haproxies: list[int] = field(default_factory=list)
    logs: dict[str, Path] = field(default_factory=dict)

    def log_tails(self, size: int = 3000) -> dict[str, str]:
        tails = {f"our {k}": v[-size:] for k, v in self.ours.logs().items()}
        for chain in self.chains:
            for service, text in chain.logs().items():
                tails[f"{chain.workdir.name} {service}"] = text[-size:]
        for name, path in self.logs.items():
            if path.exists():
                tails[name] = path.read_text(errors="replace")[-size:]
        return tails


def _user_data_b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def create_cloud(world: World) -> None:
    """Projects, networks, subnets, routers, DHCP ports and four instances in our store."""
    call = world.ours.call
    for name in ("a", "b"):
        world.projects[name] = call(
            "POST", "/v1/projects", {"id": f"interop-{name}", "name": f"Interop {name.upper()}"}
        )["id"]
    subnet_ids: dict[str, str] = {}
    for name, mtu in (("a", 1450), ("b", 1500)):
        net = call(
            "POST",
            "/v1/networks",
            {"name": f"net-{name}", "project_id": world.projects[name], "mtu": mtu},
        )
        world.networks[name] = net["id"]
        subnet: dict[str, Any] = {
            "network_id": net["id"],
            "cidr": CIDR,
            "gateway_ip": "10.78.0.1",
            "dns_nameservers": ["10.78.0.3"] if name == "a" else [],
        }
        if name == "a":
            subnet["host_routes"] = [{"destination": "192.168.50.0/24", "nexthop": "10.78.0.254"}]
        subnet_ids[name] = call("POST", "/v1/subnets", subnet)["id"]
        router = call(
            "POST", "/v1/routers", {"name": f"router-{name}", "project_id": world.projects[name]}
        )
        world.routers[name] = router["id"]
        call("POST", f"/v1/routers/{router['id']}/interfaces", {"subnet_id": subnet_ids[name]})
        call(
            "POST",
            "/v1/ports",
            {
                "network_id": net["id"],
                "device_owner": "network:dhcp",
                "device_id": "dhcp-interop",
                "fixed_ips": [{"ip_address": "10.78.0.2"}],
            },
        )
    # A second network for b_router's second NIC: no DHCP, a static IPv4 and an IPv6 subnet.
    net_c = call(
        "POST", "/v1/networks", {"name": "net-c", "project_id": world.projects["b"], "mtu": 9000}
    )
    world.networks["c"] = net_c["id"]
    c4 = call(
        "POST",
        "/v1/subnets",
        {
            "network_id": net_c["id"],
            "cidr": "172.31.7.0/24",
            "gateway_ip": "172.31.7.1",
            "enable_dhcp": False,
            "dns_nameservers": ["172.31.7.53", "10.78.0.3"],
            "host_routes": [{"destination": "10.200.0.0/16", "nexthop": "172.31.7.254"}],
        },
    )["id"]
    c6 = call(
        "POST",
        "/v1/subnets",
        {
            "network_id": net_c["id"],
            "cidr": "2001:db8:7::/64",
            "ip_version": 6,
            "gateway_ip": "2001:db8:7::1",
            "ipv6_address_mode": "slaac",
            "dns_nameservers": ["2001:db8:7::53"],
        },
    )["id"]

    def port(network: str, ip: str, **extra: Any) -> str:
        port_id = str(uuid.uuid4())
        fixed = extra.pop("fixed_ips", [{"ip_address": ip}])
        body = {
            "id": port_id,
            "network_id": world.networks[network],
            "fixed_ips": fixed,
            "vif_type": "ovs",
            "device_name": f"tap{port_id[:11]}",  # as nova names the tap device
            **extra,
        }
        return str(call("POST", "/v1/ports", body)["id"])

    gzipped = gzip.compress(b"#cloud-config\nruncmd: [echo gzipped]\n", mtime=0)
    specs: dict[str, dict[str, Any]] = {
        "a_dhcp": {
            "name": "Web Server 1",
            "hostname": "web-1",
            "project_id": world.projects["a"],
            "user_id": "alice",
            "availability_zone": "az-1",
            "launch_index": 2,
            "reservation_id": "r-interop1",
            "image_ref": "6f2ff1ce-0d8c-4bd1-9f43-9e0b5d2c0e01",
            "kernel_id": "0c1a7b32-kernel-0001",
            "ramdisk_id": "0c1a7b32-ramdisk-0001",
            "flavor_name": "m1.small",
            "root_device_name": "/dev/vda",
            "default_ephemeral_device": "/dev/vdb",
            "block_device_mapping": [
                {
                    "device_name": "/dev/vdc",
                    "source_type": "volume",
                    "destination_type": "volume",
                    "volume_id": "vol-1",
                    "boot_index": -1,
                },
                {"device_name": "/dev/vdd", "source_type": "blank", "guest_format": "swap"},
                {"device_name": "/dev/vde", "source_type": "blank"},
            ],
            "key_name": "key-a",
            "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA1nterop alice@interop",
            "user_data": _user_data_b64(b"#cloud-config\nhostname: web-1\nfqdn: web-1.example\n"),
            "metadata": {"role": "web", "tier": "front", "\u00fcml\u00e4ut": "caf\u00e9 \u2603"},
            "security_groups": ["default", "web"],
            "device_tags": [
                {
                    "type": "nic",
                    "bus": "pci",
                    "address": "0000:00:03.0",
                    "mac": "fa:16:3e:11:22:33",
                    "tags": ["uplink"],
                    "vlan": 100,
                },
                {
                    "type": "disk",
                    "bus": "scsi",
                    "address": "0:0:0:1",
                    "serial": "vol-1",
                    "path": "/dev/sdb",
                    "tags": ["data"],
                },
            ],
            "dedicated_cpus": [3, 2],
            "networks": [{"port_id": port("a", "10.78.0.5", floating_ip="203.0.113.10")}],
        },
        "a_router": {
            "name": "minimal",
            "project_id": world.projects["a"],
            "root_device_name": None,
            "networks": [{"port_id": port("a", "10.78.0.6")}],
        },
        "b_dhcp": {
            "name": "gz",
            "hostname": "gz-1",
            "project_id": world.projects["b"],
            "key_name": "key-b",
            "key_type": "x509",
            "public_key": "-----BEGIN CERTIFICATE-----\nMIIBinterop\n-----END CERTIFICATE-----\n",
            "user_data": _user_data_b64(gzipped),
            "metadata": {"a": "1"},
            "flavor_name": "m1.tiny",
            "networks": [{"port_id": port("b", "10.78.0.5")}],
        },
        "b_router": {
            "name": "two-nics",
            "project_id": world.projects["b"],
            "user_data": _user_data_b64(bytes(range(256))),
            "image_ref": "6f2ff1ce-0d8c-4bd1-9f43-9e0b5d2c0e01",
            "security_groups": [],
            "device_tags": [{"type": "share", "share_id": "share-1", "tag": "shared"}],
            "networks": [
                {"port_id": port("b", "10.78.0.6")},
                {
                    "port_id": port(
                        "c",
                        "",
                        fixed_ips=[
                            {"subnet_id": c4, "ip_address": "172.31.7.20"},
                            {"subnet_id": c6, "ip_address": "2001:db8:7::20"},
                        ],
                    )
                },
            ],
        },
    }
    for key, spec in specs.items():
        world.instances[key] = call("POST", "/v1/instances", spec)


def write_upstream_files(world: World, passwords: dict[str, str]) -> tuple[Path, Path]:
    """neutron's ports file and nova's instances file, from what our control API holds."""
    call = world.ours.call
    ports = call("GET", "/v1/ports")["ports"]
    subnets = {s["id"]: s for s in call("GET", "/v1/subnets")["subnets"]}
    networks = {n["id"]: n for n in call("GET", "/v1/networks")["networks"]}
    dhcp = {
        ip["subnet_id"]: ip["ip_address"]
        for p in ports
        if p["device_owner"] == "network:dhcp"
        for ip in p["fixed_ips"]
    }
    database = world.ours.workdir / "metastack.sqlite"
    with contextlib.closing(sqlite3.connect(database)) as db:
        images = dict(db.execute("SELECT uuid, id FROM ec2_image_ids").fetchall())
    by_id = {p["id"]: p for p in ports}
    instances = [
        nova_instance(
            call("GET", f"/v1/instances/{item['uuid']}"),
            ports=by_id,
            subnets=subnets,
            networks=networks,
            dhcp_servers=dhcp,
            image_numbers=images,
            password=passwords.get(item["uuid"], ""),
        )
        for item in world.instances.values()
    ]
    ports_file = world.workdir / "ports.json"
    instances_file = world.workdir / "instances.json"
    write_json(ports_file, neutron_ports(ports))
    write_json(instances_file, {"instances": instances})
    return ports_file, instances_file


def plan_site(world: World, chain: str, run_id: str) -> Site:
    lab = Lab(f"{run_id}{CHAINS.index(chain)}")
    site = Site(chain, lab)
    nets = {name: lab.network(name, CIDR) for name in ("a", "b")}
    for name, net in nets.items():
        site.dhcp[name] = lab.dhcp(net)
        site.routers[name] = lab.router([net])
    for plan in GUESTS:
        via = site.dhcp[plan.network] if plan.path == "dhcp" else "gateway"
        site.guests[plan.key] = lab.guest(nets[plan.network], plan.host, metadata_via=via).netns
    return site


def haproxy_sites(world: World, site: Site) -> list[HaproxySite]:
    found = []
    for name in ("a", "b"):
        found.append(
            HaproxySite(
                site.dhcp[name].netns, "network", world.networks[name], "169.254.169.254", 80
            )
        )
        found.append(
            HaproxySite(site.routers[name].netns, "router", world.routers[name], "0.0.0.0", 9697)
        )
    return found


def our_listeners(world: World, site: Site) -> list[dict[str, Any]]:
    listeners: list[dict[str, Any]] = []
    for name in ("a", "b"):
        listeners += [
            {"netns": site.dhcp[name].netns, "host": "169.254.169.254", "port": 80,
             "network_id": world.networks[name]},
            {"netns": site.routers[name].netns, "host": "0.0.0.0", "port": 9697,
             "router_id": world.routers[name]},
        ]  # fmt: skip
    return listeners


def curl_many(netns: str, urls: list[str], folder: Path) -> list[Answer]:
    """GET each URL in order from inside a namespace with one curl (connections reused as a
    client would); status, content type and the body's exact bytes of each."""
    folder.mkdir(parents=True, exist_ok=True)
    argv = ["ip", "netns", "exec", netns, "curl"]
    for index, url in enumerate(urls):
        if index:
            argv.append("--next")
        argv += ["-sg", "-m", "10", "-D", str(folder / f"{index}.h")]
        argv += ["-o", str(folder / f"{index}.b"), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30 + 10 * len(urls))
    answers = []
    for index in range(len(urls)):
        head = folder / f"{index}.h"
        body = folder / f"{index}.b"
        lines = head.read_text(errors="replace").splitlines() if head.exists() else []
        if not lines:
            answers.append(Answer(-1, "", f"no answer (curl exit {done.returncode})".encode()))
            continue
        status = int(lines[0].split()[1])
        fields = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in lines[1:])
        )
        answers.append(
            Answer(
                status,
                fields.get("content-type", ""),
                body.read_bytes() if body.exists() else b"",
                fields.get("server", ""),
            )
        )
    shutil.rmtree(folder, ignore_errors=True)
    return answers


def set_password(world: World, site: Site, key: str) -> None:
    """The guest posts its (encrypted) password through our whole chain, as cloudbase-init
    does on Windows guests; nova is then given the same password."""
    netns = site.guests[key]
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "curl", "-sg", "-m", "10", "-o", "/dev/null", "-w",
         "%{http_code}", "--data-binary", PASSWORD,
         "http://169.254.169.254/openstack/2013-04-04/password"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.stdout == "200", f"password POST through our chain: {done.stdout} {done.stderr}"


@contextlib.contextmanager
def running_world(python: Path) -> Iterator[World]:
    """Start everything, yield the world, stop and remove everything (checked)."""
    run_id = secrets.token_hex(2)
    workdir = Path(tempfile.mkdtemp(prefix=f"ms-interop-{run_id}-", dir="/var/tmp"))
    workdir.chmod(0o755)
    secret = secrets.token_urlsafe(24)
    ours = Chain(
        workdir / "ours",
        api={"vendordata": {"static_json": str(workdir / "vendor.json")}},
        agent={"upstream_timeout": 5.0, "feed_wait": 2},
        secret=secret,
    )
    world = World(workdir, ours)
    labs: list[Lab] = []
    try:
        (workdir / "vendor.json").write_text(json.dumps(VENDOR_DATA))
        ours.start()
        create_cloud(world)
        ports_file, instances_file = write_upstream_files(world, {})
        with ThreadPoolExecutor(max_workers=4) as pool:
            nova, nova_port = start_nova_metadata(  # returns at once; waited for below
                python,
                workdir / "nova",
                secret=secret,
                instances=instances_file,
                vendor_json=workdir / "vendor.json",
            )
            world.services.append(nova)
            world.logs["nova metadata API"] = workdir / "nova" / "nova-metadata.log"
            world.logs["nova output"] = nova.log
            # neutron's agents: one in front of nova (upstream), one in front of our API (a)
            agent_dirs = {"upstream": workdir / "up", "a": workdir / "a"}
            agents = {
                name: start_neutron_agent(
                    python,
                    folder,
                    socket_path=folder / "agent.sock",
                    nova_port=nova_port if name == "upstream" else ours.metadata_port,
                    secret=secret,
                    ports=ports_file,
                )
                for name, folder in agent_dirs.items()
            }
            for name, agent in agents.items():
                world.services.append(agent)
                world.logs[f"neutron agent ({name})"] = agent.log
                world.logs[f"neutron agent log ({name})"] = (
                    agent_dirs[name] / "neutron-metadata-agent.log"
                )
            sites = {chain: plan_site(world, chain, run_id) for chain in CHAINS}
            labs = [site.lab for site in sites.values()]
            world.sites = sites
            configs = {
                chain: pool.submit(
                    neutron_haproxy_configs,
                    python,
                    workdir / f"haproxy-{chain}",
                    socket,
                    haproxy_sites(world, sites[chain]),
                )
                for chain, socket in (
                    ("upstream", agent_dirs["upstream"] / "agent.sock"),
                    ("c", ours.agent_socket),
                )
            }
            for lab in labs:
                lab.apply()
            # our agent in front of nova (b), our proxies for a, b (and ours for `metastack`)
            chain_b = Chain(
                workdir / "b",
                secret=secret,
                admin_token=ours.admin_token,
                control_port=ours.control_port,
                metadata_port=nova_port,
                agent={"upstream_timeout": 5.0, "feed_wait": 2},
            )
            world.chains.append(chain_b)
            chain_b.start_agent()
            chain_b.start_proxy()
            chain_a = Chain(workdir / "a", secret=secret)  # its agent: neutron's, on a/agent.sock
            world.chains.append(chain_a)
            nova.wait(lambda: nova_ready(nova))
            for name, agent in agents.items():
                agent.wait(unix_ready(agent_dirs[name] / "agent.sock"))
            chain_a.start_proxy()
            for chain, proxy in (("a", chain_a), ("b", chain_b), ("metastack", ours)):
                status, answer = proxy.proxy_control().replace(our_listeners(world, sites[chain]))
                assert status == 200 and not answer["failed"], answer
            for job in configs.values():
                for command in job.result():
                    world.haproxies.append(start_haproxy(command))
        set_password(world, sites["metastack"], "a_dhcp")
        write_upstream_files(world, {world.instances["a_dhcp"]["uuid"]: PASSWORD})
        yield world
    except BaseException:
        for name, text in world.log_tails().items():
            print(f"--- {name} ---\n{text}")
        raise
    finally:
        try:
            for pid in world.haproxies:
                stop_pid(pid)
            for chain in world.chains:
                chain.stop()
            for service in world.services:
                service.stop()
            ours.stop()
        finally:
            for lab in labs:
                lab.cleanup()
            shutil.rmtree(workdir, ignore_errors=True)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for lab in labs:
            assert lab.prefix not in left, f"namespaces left behind: {left}"
        assert not workdir.exists()
