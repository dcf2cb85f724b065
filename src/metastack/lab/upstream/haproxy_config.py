"""Write the haproxy configurations neutron's L3 and DHCP agents write, by neutron's own code.

Run with the upstream virtual environment's Python (neutron installed); this file imports
nothing from metastack. For each site it calls the callback neutron's agents hand to
their process manager (`MetadataDriver._get_metadata_proxy_callback(...)(pid_file)`),
which renders `driver_base`'s template with the agent's configuration (defaults, as an
L3 agent registers them) and writes `<state_path>/ns-metadata-proxy/<uuid>.conf`.

    python haproxy_config.py < request.json > answer.json

request: `{"state_path", "metadata_proxy_socket", "sites": [{"uuid", "kind": "network" |
"router", "bind_address", "port"}]}`; answer: `{"sites": [{"uuid", "argv", "pid_file"}]}`,
`argv` being the command neutron's process manager runs inside the namespace.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from neutron.agent import l3_agent
from neutron.agent.metadata import driver
from oslo_config import cfg


def main() -> int:
    request: dict[str, Any] = json.load(sys.stdin)
    conf = cfg.CONF
    l3_agent.register_opts(conf)
    conf(args=[], project="neutron", default_config_files=[])
    conf.set_override("state_path", request["state_path"])
    conf.set_override("metadata_proxy_socket", request["metadata_proxy_socket"])
    pids = os.path.join(request["state_path"], "external", "pids")
    os.makedirs(pids, exist_ok=True)
    answer = []
    for site in request["sites"]:
        ids = {f"{site['kind']}_id": site["uuid"]}
        callback = driver.MetadataDriver._get_metadata_proxy_callback(
            site["bind_address"], site["port"], conf, **ids
        )
        pid_file = os.path.join(pids, f"{site['uuid']}.pid.haproxy")  # as ProcessManager names it
        answer.append({"uuid": site["uuid"], "argv": callback(pid_file), "pid_file": pid_file})
    json.dump({"sites": answer}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
