"""The demo's projects, networks and guests, created through the control API."""

from __future__ import annotations

import base64
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from metastack.demo import guests
from metastack.demo.state import DemoState, Guest
from metastack.errors import MetastackError
from metastack.netns.apply import list_netns

Progress = Callable[[str], None]
# One control API call: (method, path, body=None) -> the decoded answer.
Call = Callable[..., Any]
DEMO_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMetastackDemoKeyNotASecret00000000000 demo@metastack"
)
BOOT_CONCURRENCY = 8


@dataclass(frozen=True)
class NetworkPlan:
    """One demo network: its project, CIDR and whether a router serves it."""

    key: str
    project: str
    cidr_prefix: str  # first three octets, e.g. "10.10.0"
    routed: bool


# The same CIDRs in both projects: overlapping guest addresses are the point.
NETWORKS = (
    NetworkPlan("a-routed", "demo-a", "10.10.0", True),
    NetworkPlan("a-isolated", "demo-a", "10.20.0", False),
    NetworkPlan("b-routed", "demo-b", "10.10.0", True),
    NetworkPlan("b-isolated", "demo-b", "10.20.0", False),
)


def create_networks(call: Call, progress: Progress) -> dict[str, dict[str, Any]]:
    """Two projects, each with a routed and an isolated network; by plan key, in order."""
    progress("creating projects demo-a and demo-b, a routed and an isolated network in each")
    for project in ("demo-a", "demo-b"):
        call("POST", "/v1/projects", {"id": project, "name": project})
    networks: dict[str, dict[str, Any]] = {}
    for plan in NETWORKS:
        network = call(
            "POST", "/v1/networks", {"name": plan.key, "project_id": plan.project, "mtu": 1450}
        )
        subnet = call(
            "POST",
            "/v1/subnets",
            {
                "network_id": network["id"],
                "cidr": f"{plan.cidr_prefix}.0/24",
                "ip_version": 4,
                "gateway_ip": f"{plan.cidr_prefix}.1",
            },
        )
        if plan.routed:
            router = call(
                "POST", "/v1/routers", {"name": f"router-{plan.key}", "project_id": plan.project}
            )
            call("POST", f"/v1/routers/{router['id']}/interfaces", {"subnet_id": subnet["id"]})
            network["router_id"] = router["id"]
        network["plan"] = plan
        networks[plan.key] = network
    return networks


def wait_for_namespaces(
    state: DemoState, wanted: set[str], progress: Progress, timeout: float = 60.0
) -> None:
    """Wait until the netagents have made every namespace in `wanted`; record them."""
    progress(f"waiting for the netagent: {len(wanted)} DHCP and router namespaces, dnsmasq")
    guests.wait_for(lambda: wanted <= set(list_netns()), timeout, "the netagent's namespaces")
    state.namespaces.extend(sorted(wanted))
    state.save()


def create_instances(
    state: DemoState, call: Call, networks: dict[str, dict[str, Any]], count: int
) -> None:
    """`count` instances, round robin over the networks; recorded as guests."""
    plans = list(networks.values())
    for index in range(count):
        network = plans[index % len(plans)]
        plan: NetworkPlan = network["plan"]
        name = f"demo-{index + 1}"
        user_data = f"#cloud-config\nhostname: {name}\nfinal_message: booted by metastack\n"
        instance = call(
            "POST",
            "/v1/instances",
            {
                "name": name,
                "project_id": plan.project,
                "networks": [
                    {
                        "network_id": network["id"],
                        "ip_address": f"{plan.cidr_prefix}.{10 + index // len(plans)}",
                    }
                ],
                "key_name": "demo",
                "public_key": DEMO_KEY,
                "user_data": base64.b64encode(user_data.encode()).decode(),
                "metadata": {"demo": "metastack", "network": plan.key},
            },
        )
        port = call("GET", f"/v1/ports?device_id={instance['uuid']}")["ports"][0]
        state.guests.append(
            Guest(
                name=name,
                uuid=instance["uuid"],
                namespace=f"{state.prefix}g{index + 1}",
                network_id=network["id"],
                network=plan.key,
                project_id=plan.project,
                mac=port["mac_address"],
            )
        )
    state.save()


def boot(
    state: DemoState,
    networks: dict[str, dict[str, Any]],
    bridge_name: Callable[[str], str],
    progress: Progress,
) -> None:
    """Plug every recorded guest into its network's bridge, DHCP, then cloud-init."""
    count = len(state.guests)
    progress(f"booting {count} guests: DHCP (busybox udhcpc), then cloud-init")
    gateways = {n["id"]: f"{n['plan'].cidr_prefix}.1" for n in networks.values()}
    done = 0

    def boot_one(guest: Guest) -> Guest:
        files = guests.plug(
            guest.namespace,
            f"{state.prefix}fabric",
            bridge_name(guest.network_id),
            guest.namespace.removeprefix(state.prefix),
            guest.mac,
        )
        state.files.extend(files)
        try:
            guests.dhcp(guest.namespace)
        except MetastackError as exc:
            guest.error = f"DHCP failed: {exc}"
            return guest
        guest.ip = guests.address(guest.namespace)
        guest.path = guests.metadata_path(guest.namespace, gateways[guest.network_id])
        report = guests.cloud_init(guest.namespace)
        guest.seconds = float(report.get("seconds", 0.0))
        guest.hostname = str(report.get("local_hostname", ""))
        guest.cloud_init_ok = bool(report.get("ok")) and report.get("instance_id") == guest.uuid
        if not guest.cloud_init_ok:
            guest.error = str(report.get("error") or report.get("log", ""))[-300:]
        return guest

    with ThreadPoolExecutor(max_workers=BOOT_CONCURRENCY) as pool:
        for guest in pool.map(boot_one, state.guests):
            done += 1
            mark = "ok" if guest.cloud_init_ok else "FAILED"
            progress(
                f"  [{done}/{count}] {guest.name} {guest.ip or '-'} via {guest.path or '-'}: {mark}"
            )
            state.save()
