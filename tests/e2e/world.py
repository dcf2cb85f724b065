"""The e2e world: two projects with overlapping networks, guests on both metadata paths.

Everything is reached the way an operator or a guest would: resources through the
control API and the `metastack` CLI, listeners through the proxy's control socket,
metadata by curl and cloud-init from inside guest namespaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from metastack.lab import Lab
from metastack.lab.chain import Chain
from metastack.lab.guest import GUEST_PYTHON, script

CIDR = "10.77.0.0/24"  # both networks: the overlap is the point
METADATA = "http://169.254.169.254"
METADATA_V6 = "http://[fe80::a9fe:a9fe%eth0]"


@dataclass
class GuestVm:
    """A guest namespace and the instance the cloud believes runs there (None: no port)."""

    key: str
    netns: str
    address: str
    path: Literal["dhcp", "router"]
    network_id: str
    project_id: str
    mac: str
    instance: dict[str, Any] | None = None
    user_data: str = ""
    public_key: str = ""

    @property
    def uuid(self) -> str:
        assert self.instance is not None, f"{self.key} has no instance"
        return str(self.instance["uuid"])

    @property
    def ec2_id(self) -> str:
        assert self.instance is not None, f"{self.key} has no instance"
        return str(self.instance["ec2_id"])

    @property
    def hostname(self) -> str:
        assert self.instance is not None, f"{self.key} has no instance"
        return str(self.instance["hostname"])


@dataclass
class World:
    lab: Lab
    chain: Chain
    guests: dict[str, GuestVm] = field(default_factory=dict)
    networks: dict[str, str] = field(default_factory=dict)  # a/b -> network id
    routers: dict[str, str] = field(default_factory=dict)  # a/b -> router id
    projects: dict[str, str] = field(default_factory=dict)  # a/b -> project id


def guest_mac(netns: str, interface: str = "eth0") -> str:
    """The MAC address the guest's NIC really carries."""
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "link", "show", interface],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return str(json.loads(out)[0]["address"])


def cli(chain: Chain, *args: str) -> subprocess.Popen[str]:
    """Start one `metastack` resource command against the chain (token via environment)."""
    env = {**os.environ, "METASTACK_URL": chain.control_url, "METASTACK_TOKEN": chain.admin_token}
    return subprocess.Popen(
        [*chain.command, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen[str]) -> Any:
    """Wait for a CLI command started with --json; its decoded output."""
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, f"{proc.args!r}: exit {proc.returncode}: {err}"
    return json.loads(out)


def build(lab: Lab, chain: Chain, workdir: Path) -> World:
    """Plan and apply the namespaces, create the cloud's objects, register the listeners."""
    world = World(lab, chain)
    layout: dict[str, tuple[str, int, Literal["dhcp", "router"], bool]] = {
        # key: (network, host index, metadata path, has an instance)
        "a_dhcp": ("a", 5, "dhcp", True),
        "a_router": ("a", 6, "router", True),
        "b_dhcp": ("b", 5, "dhcp", True),  # same address as a_dhcp
        "b_router": ("b", 6, "router", True),  # same address as a_router
        "a_orphan": ("a", 9, "dhcp", False),  # an address no port holds
    }
    nets = {name: lab.network(name, CIDR) for name in ("a", "b")}
    dhcp = {name: lab.dhcp(net) for name, net in nets.items()}
    routers = {name: lab.router([net]) for name, net in nets.items()}
    planned = {
        key: lab.guest(nets[net], host, metadata_via=dhcp[net] if path == "dhcp" else "gateway")
        for key, (net, host, path, _) in layout.items()
    }
    lab.apply()

    for name in ("a", "b"):
        project = chain.call("POST", "/v1/projects", {"name": f"project-{name}"})
        world.projects[name] = project["id"]
        network = chain.call(
            "POST", "/v1/networks", {"name": f"net-{name}", "project_id": project["id"]}
        )
        world.networks[name] = network["id"]
        subnet = chain.call(
            "POST",
            "/v1/subnets",
            {"network_id": network["id"], "cidr": CIDR, "gateway_ip": nets[name].host(1)},
        )
        router = chain.call(
            "POST", "/v1/routers", {"name": f"router-{name}", "project_id": project["id"]}
        )
        world.routers[name] = router["id"]
        chain.call("POST", f"/v1/routers/{router['id']}/interfaces", {"subnet_id": subnet["id"]})

    creating: dict[str, subprocess.Popen[str]] = {}
    for key, (net, _, path, has_instance) in layout.items():
        guest = planned[key]
        vm = GuestVm(
            key=key,
            netns=guest.netns,
            address=guest.address,
            path=path,
            network_id=world.networks[net],
            project_id=world.projects[net],
            mac=guest_mac(guest.netns),
        )
        world.guests[key] = vm
        if not has_instance:
            continue
        # The port carries the guest NIC's MAC, so its IPv6 link-local address maps to it.
        port = chain.call(
            "POST",
            "/v1/ports",
            {
                "network_id": vm.network_id,
                "mac_address": vm.mac,
                "fixed_ips": [{"ip_address": vm.address}],
            },
        )
        vm.user_data = f"#cloud-config\n# for {key}\nhostname: vm-{key.replace('_', '-')}\n"
        vm.public_key = f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA{key.upper()} {key}@e2e"
        user_data = workdir / f"{key}.user-data"
        user_data.write_text(vm.user_data)
        public_key = workdir / f"{key}.pub"
        public_key.write_text(vm.public_key + "\n")
        creating[key] = cli(
            chain,
            "instance",
            "create",
            f"vm-{key.replace('_', '-')}",
            "--json",
            "--project",
            vm.project_id,
            "--port",
            port["id"],
            "--az",
            "nova",
            "--key-name",
            f"key-{key}",
            "--public-key-file",
            str(public_key),
            "--user-data-file",
            str(user_data),
        )
    for key, proc in creating.items():
        world.guests[key].instance = finish(proc)

    listeners: list[dict[str, Any]] = []
    for name in ("a", "b"):
        network_id = world.networks[name]
        listeners += [
            {"netns": dhcp[name].netns, "host": "169.254.169.254", "port": 80,
             "network_id": network_id},
            {"netns": dhcp[name].netns, "host": "fe80::a9fe:a9fe", "port": 80,
             "network_id": network_id, "interface": dhcp[name].interface},
            {"netns": routers[name].netns, "host": "0.0.0.0", "port": 9697,
             "router_id": world.routers[name]},
        ]  # fmt: skip
    status, answer = chain.proxy_control().replace(listeners)
    assert status == 200 and not answer["failed"], answer
    return world


@dataclass(frozen=True)
class Reply:
    status: int  # HTTP status, or minus curl's exit code
    body: str
    seconds: float


def curl(netns: str, url: str, *headers: str, timeout: float = 10) -> Reply:
    """GET from inside a namespace with curl."""
    argv = ["ip", "netns", "exec", netns, "curl", "-sg", "-m", str(timeout)]
    for header in headers:
        argv += ["-H", header]
    argv += ["-w", "\n%{http_code}", url]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        return Reply(-done.returncode, done.stderr, seconds)
    body, _, code = done.stdout.rpartition("\n")
    return Reply(int(code), body, seconds)


def get_json(netns: str, url: str, *headers: str) -> Any:
    """GET a JSON document from inside a namespace; it must answer 200."""
    reply = curl(netns, url, *headers)
    assert reply.status == 200, (netns, url, reply)
    return json.loads(reply.body)


def cloud_init(netns: str, *args: str) -> dict[str, dict[str, Any]]:
    """Run the cloud-init probe in a guest with the guest's Python; results by datasource."""
    argv = ["ip", "netns", "exec", netns, GUEST_PYTHON, str(script("cloudinit_probe"))]
    argv += ["--max-wait", "20", "--timeout", "5", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert results, f"probe printed nothing (exit {done.returncode}): {done.stderr[-3000:]}"
    return {result["datasource"]: result for result in results}


def route_via(netns: str, destination: str) -> str:
    """The next hop a guest's kernel picks for `destination`."""
    out = subprocess.run(
        ["ip", "-n", netns, "-j", "route", "get", destination],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return str(json.loads(out)[0].get("gateway", ""))


# The agent answers 503 at the latest after this many seconds (the tests assert far less).
AGENT_UPSTREAM_TIMEOUT = 5.0
# A short change-feed long-poll: a graceful API stop waits for the open poll to end.
AGENT_FEED_WAIT = 2


@contextlib.contextmanager
def running_world(proxy: dict[str, Any] | None = None) -> Iterator[World]:
    """Build the world on a fresh chain (`proxy`: proxy settings to change); afterwards
    remove everything and check that nothing is left: namespaces, /etc/netns files, the
    work directory, processes."""
    run_id = secrets.token_hex(3)
    workdir = Path(tempfile.mkdtemp(prefix=f"ms-{run_id}-"))
    lab = Lab(run_id, ipv6=True)
    chain = Chain(
        workdir,
        api_workers=2,
        agent={"upstream_timeout": AGENT_UPSTREAM_TIMEOUT, "feed_wait": AGENT_FEED_WAIT},
        proxy=proxy or {},
    )
    started: list[int] = []
    try:
        chain.start()
        started = [pid for pids in chain.pids().values() for pid in pids]
        yield build(lab, chain, workdir)
    except BaseException:
        for service, text in chain.logs().items():
            print(f"--- {service} log ---\n{text[-3000:]}")
        raise
    finally:
        try:
            chain.stop()
        finally:
            lab.cleanup()
            shutil.rmtree(workdir, ignore_errors=True)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert lab.prefix not in left, f"namespaces left behind: {left}"
        assert not list(Path("/etc/netns").glob(f"{lab.prefix}*"))
        assert not workdir.exists()
        for pid in started:
            assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"pid {pid} still runs"


def add_service_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    """End a failed test's report with the tail of each service's log."""
    world = getattr(item, "funcargs", {}).get("world")
    if report.failed and isinstance(world, World):
        for service, text in world.chain.logs().items():
            report.sections.append((f"metastack {service} log (tail)", text[-4000:]))


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (FileNotFoundError, IndexError):
        return True
