"""Guests as namespaces: on a bridge, configured by DHCP, booted by cloud-init."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from metastack.lab.guest import GUEST_PYTHON, script
from metastack.netns.exec import NetnsError, run

METADATA_IP = "169.254.169.254"
ETC_NETNS = Path("/etc/netns")
UDHCPC_SCRIPT = Path(__file__).resolve().parent.parent / "lab" / "guest" / "udhcpc.sh"


def plug(namespace: str, fabric: str, bridge: str, port: str, mac: str) -> list[str]:
    """Create the guest namespace with `eth0` (the port's MAC) on `bridge` in the fabric.

    The veth is made inside the fabric namespace with its peer put straight into the
    guest: nothing is ever created in the host's namespace. Returns files it wrote.
    """
    run(["ip", "netns", "add", namespace])
    batch = "\n".join(
        [
            f"link add {port} type veth peer name eth0 netns {namespace}",
            f"link set {port} master {bridge}",
            f"link set {port} up",
        ]
    )
    run(["ip", "-n", fabric, "-batch", "-"], input=batch + "\n")
    run(["ip", "-n", namespace, "link", "set", "lo", "up"])
    run(["ip", "-n", namespace, "link", "set", "eth0", "address", mac, "up"])
    resolv = ETC_NETNS / namespace / "resolv.conf"
    resolv.parent.mkdir(parents=True, exist_ok=True)
    # Name lookups inside the guest (cloud-init probes a few) fail at once, never leave it.
    resolv.write_text("nameserver 127.0.0.1\n")
    return [str(resolv.parent)]


def dhcp(namespace: str, attempts: int = 20) -> None:
    """Run busybox udhcpc once in the guest: address, MTU and routes from dnsmasq."""
    argv = [
        "ip", "netns", "exec", namespace, "busybox", "udhcpc", "-i", "eth0", "-n", "-q",
        "-t", str(attempts), "-T", "1", "-A", "1",
        "-O", "staticroutes", "-O", "mtu", "-s", str(UDHCPC_SCRIPT),
    ]  # fmt: skip
    run(argv, timeout=attempts * 2 + 10)


def address(namespace: str) -> str:
    """The guest's IPv4 address on eth0 ("" if it has none)."""
    out = run(["ip", "-n", namespace, "-4", "-o", "addr", "show", "dev", "eth0"]).stdout
    for field in out.split():
        if "/" in field and field[0].isdigit():
            return field.split("/")[0]
    return ""


def metadata_path(namespace: str, gateway: str) -> str:
    """`router` when 169.254.169.254 is reached via the gateway, `dhcp` via the DHCP port."""
    out = run(["ip", "-n", namespace, "route", "get", METADATA_IP], check=False).stdout
    words = out.split()
    via = words[words.index("via") + 1] if "via" in words else ""
    if not via:
        return ""
    return "router" if via == gateway else "dhcp"


def cloud_init(namespace: str, timeout: float = 120.0) -> dict[str, Any]:
    """Run Debian's cloud-init OpenStack datasource inside the guest; its report."""
    argv = [
        "ip", "netns", "exec", namespace, GUEST_PYTHON, str(script("cloudinit_probe")),
        "--datasource", "openstack",
    ]  # fmt: skip
    try:
        done = run(argv, check=False, timeout=timeout)
    except NetnsError as exc:
        return {"ok": False, "error": str(exc)}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            report: dict[str, Any] = json.loads(line)
            return report
    return {"ok": False, "error": (done.stderr or done.stdout)[-500:] or "no report"}


def remove(namespace: str) -> None:
    """Delete a guest namespace (its veth goes with it) and its /etc/netns folder."""
    run(["ip", "netns", "delete", namespace], check=False)
    shutil.rmtree(ETC_NETNS / namespace, ignore_errors=True)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    """Poll `predicate` until true; raise NetnsError naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise NetnsError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)
