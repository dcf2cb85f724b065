"""neutron's metadata agent (`neutron-metadata-agent`) with its port lookups answered from a
JSON file instead of neutron-server over RPC.

Run with the upstream virtual environment's Python (neutron installed); this file imports
nothing from metastack. It runs neutron's own entry point
(`neutron.agent.metadata_agent.main`: config, logging, `UnixDomainMetadataProxy(...).run()`,
its socket server and `MetadataProxyHandler`) with two replacements, so that no
neutron-server and no message queue are needed:

- `MetadataPluginAPI.get_ports(context, filters)`, the RPC call to neutron-server, is
  answered by applying the same filters (neutron's `get_ports` semantics for the ones
  the agent sends: `device_id`, `device_owner`, `network_id`, `mac_address`,
  `fixed_ips={'ip_address': [...]}`) to the ports in PORTS (re-read when it changes);
- the agent's state reports to neutron-server (heartbeats) are not sent.

    python neutron_agent.py --ports ports.json --config-file metadata_agent.ini

PORTS holds `{"ports": [{"id", "device_id", "device_owner", "network_id", "project_id",
"mac_address", "fixed_ips": [{"subnet_id", "ip_address"}]}, ...]}`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import Any

from neutron.agent import metadata_agent
from neutron.agent.metadata import agent


class PortsFile:
    """The ports file, parsed again whenever its modification time changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp = -1
        self._ports: list[dict[str, Any]] = []

    def ports(self) -> list[dict[str, Any]]:
        with self._lock:
            stamp = os.stat(self.path).st_mtime_ns
            if stamp != self._stamp:
                with open(self.path) as handle:
                    self._ports = json.load(handle)["ports"]
                self._stamp = stamp
            return self._ports


def matches(port: dict[str, Any], filters: dict[str, Any]) -> bool:
    """neutron-server's port filter: every filter holds; a list filter is "one of"."""
    for key, wanted in filters.items():
        if key == "fixed_ips":
            addresses = {ip["ip_address"] for ip in port.get("fixed_ips", [])}
            if not addresses & set(wanted.get("ip_address", [])):
                return False
        elif port.get(key) not in wanted:
            return False
    return True


def plugin_api(ports: PortsFile) -> type:
    """A stand-in for `MetadataPluginAPI` (the agent's RPC client to neutron-server)."""

    class FilePluginApi:
        def __init__(self, topic: str) -> None:
            self.topic = topic

        def get_ports(self, context: Any, filters: dict[str, Any]) -> list[dict[str, Any]]:
            return [dict(port) for port in ports.ports() if matches(port, filters)]

    return FilePluginApi


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] != "--ports":
        sys.stderr.write("usage: neutron_agent.py --ports PORTS.json [neutron options]\n")
        return 2
    agent.MetadataPluginAPI = plugin_api(PortsFile(argv[1]))
    agent.UnixDomainMetadataProxy._init_state_reporting = lambda self: None
    sys.argv = ["neutron-metadata-agent", *argv[2:]]
    metadata_agent.main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
