"""Debian's haproxy with the configuration networking-ovn generates, in front of our agent.

Two networks with the same CIDR, one guest at 10.88.0.5 on each; each network's metadata
namespace (what OVN calls `ovnmeta-<network>`: 169.254.169.254/32 and an address on the
network) runs one haproxy stamping `X-OVN-Network-ID`, with the template of
docs/wire-contracts.md#upstream-haproxy line for line (OVN's `add-header`), forwarding
to `metastack agent` on its unix socket, which asks a real `metastack api`.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from metastack.lab import Guest, Lab
from metastack.lab.chain import Chain

from .conftest import Processes, curl

pytestmark = pytest.mark.netns

HAPROXY = "/usr/sbin/haproxy"
CIDR = "10.88.0.0/24"
MD = "http://169.254.169.254/openstack/latest/meta_data.json"


def ovn_haproxy_config(network_id: str, agent_socket: Path, pidfile: Path) -> str:
    """networking-ovn's haproxy config for one network.

    See docs/wire-contracts.md#upstream-haproxy and docs/wire-contracts.md#ovn.

    `user`/`group` are neutron's defaults, the agent's own euid and egid as names.
    """
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    return f"""global
    log /dev/log local0 info
    log-tag haproxy-metadata-proxy-{network_id}
    user {user}
    group {group}
    maxconn 1024
    nbthread 2
    pidfile {pidfile}
    daemon

defaults
    log global
    mode http
    option httplog
    option dontlognull
    option http-server-close
    option forwardfor
    retries 3
    timeout http-request 30s
    timeout connect 30s
    timeout client 32s
    timeout server 32s
    timeout http-keep-alive 30s

listen listener
    bind 169.254.169.254:80
    server metadata {agent_socket}
    http-request add-header X-OVN-Network-ID {network_id}
"""


@dataclass
class OvnWorld:
    chain: Chain
    guests: dict[str, Guest] = field(default_factory=dict)
    networks: dict[str, str] = field(default_factory=dict)
    instances: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def ovn(lab: Lab, procs: Processes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OvnWorld]:
    if not os.access(HAPROXY, os.X_OK):
        pytest.skip(f"{HAPROXY} is not installed (scripts/setup installs Debian's haproxy)")
    workdir = tmp_path_factory.mktemp("ovn", numbered=True)
    chain = Chain(workdir, api_workers=1)
    try:
        chain.start_api()
        chain.start_agent()
        world = OvnWorld(chain)
        metadata_ns = {}
        for name in ("a", "b"):
            net = lab.network(f"ovn{name}", CIDR)  # the same CIDR on both
            metadata_ns[name] = lab.dhcp(net)  # 169.254.169.254/32 + 10.88.0.2, as ovnmeta-
            world.guests[name] = lab.guest(net, 5, metadata_via=metadata_ns[name])
        lab.apply()
        for name in ("a", "b"):
            project = chain.call("POST", "/v1/projects", {"name": f"ovn-{name}"})["id"]
            network = chain.call(
                "POST", "/v1/networks", {"name": f"ovn-{name}", "project_id": project}
            )
            world.networks[name] = network["id"]
            subnet = {"network_id": network["id"], "cidr": CIDR, "gateway_ip": "10.88.0.1"}
            chain.call("POST", "/v1/subnets", subnet)
            instance = chain.call(
                "POST",
                "/v1/instances",
                {
                    "name": f"ovn-vm-{name}",
                    "project_id": project,
                    "networks": [{"network_id": network["id"], "ip_address": "10.88.0.5"}],
                },
            )
            world.instances[name] = instance["uuid"]
            conf = workdir / f"{network['id']}.conf"
            pidfile = workdir / f"{network['id']}.pid.haproxy"
            conf.write_text(ovn_haproxy_config(network["id"], chain.agent_socket, pidfile))
            # `-db` keeps it in the foreground (the config's `daemon` aside), so it is
            # stopped by the PID started here; `ip netns exec` execs haproxy itself.
            argv = ["ip", "netns", "exec", metadata_ns[name].netns, HAPROXY, "-db", "-f"]
            procs.start([*argv, str(conf)], workdir / f"haproxy-{name}.log")
        for guest in world.guests.values():
            deadline = time.monotonic() + 15
            while (status := curl(guest.netns, MD, timeout=2))[0] != 200:
                assert time.monotonic() < deadline, status
                time.sleep(0.2)
        yield world
    finally:
        procs.stop_all()
        chain.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_each_guest_gets_its_own_instance_through_ovn_haproxy(ovn: OvnWorld) -> None:
    assert ovn.instances["a"] != ovn.instances["b"]
    for name, guest in ovn.guests.items():
        assert guest.address == "10.88.0.5"
        status, body = curl(guest.netns, MD)
        assert status == 200, body
        document = json.loads(body)
        assert document["uuid"] == ovn.instances[name]
        assert document["name"] == f"ovn-vm-{name}"
        status, body = curl(guest.netns, "http://169.254.169.254/latest/meta-data/instance-id")
        assert status == 200, body
        assert body.startswith("i-")  # the EC2 tree answers too


@pytest.mark.parametrize(
    "forged",
    [
        "X-OVN-Network-ID: {other}",
        "x-ovn-network-id: {own}",
        "X-Forwarded-For: 10.88.0.5",
        "X-Neutron-Network-ID: {other}",
        "X-Neutron-Router-ID: {other}",
    ],
)
def test_guest_identity_headers_through_ovn_haproxy_are_400(ovn: OvnWorld, forged: str) -> None:
    # haproxy keeps what the guest sent and adds its own: the agent refuses, never guesses.
    header = forged.format(own=ovn.networks["a"], other=ovn.networks["b"])
    status, body = curl(ovn.guests["a"].netns, MD, header)
    assert status == 400, body
    name = header.partition(":")[0]
    if name.lower() in ("x-ovn-network-id", "x-forwarded-for"):
        assert "given 2 times; exactly one is allowed" in body
    else:
        assert "X-OVN-Network-ID and X-Neutron-" in body and "both given" in body
    assert ovn.instances["a"] not in body and ovn.instances["b"] not in body
