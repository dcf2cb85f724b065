"""`bench neutron-agent`: the boot storm with neutron's real metadata agent in our agent's place,
behind our proxy and behind haproxy configured by neutron's code, side by side.

neutron's agent (29.0.0, from `.upstream-venv`, see `scripts/upstream-venv`) listens on the
socket our agent would, forwards to our metadata API, and finds ports in a file written
from the control API once the storm's instances exist (in place of its RPC to
neutron-server). It reads each request with a single recv and listens with a backlog of
5: the question is whether our proxy turns that into guest errors haproxy would not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from metastack.demo.state import DemoState, Process
from metastack.lab.chain import Chain
from metastack.lab.upstream import (
    HaproxySite,
    Service,
    neutron_haproxy_configs,
    neutron_ports,
    start_haproxy,
    start_neutron_agent,
    unix_ready,
    write_json,
)

Progress = Callable[[str], None]


@dataclass
class NeutronAgent:
    """neutron's metadata agent standing in for ours in one storm run."""

    python: Path
    service: Service
    ports: Path

    @property
    def pid(self) -> int:
        return self.service.pid

    def write_ports(self, chain: Chain) -> int:
        """Give the agent every port the control API holds; how many."""
        ports = chain.call("GET", "/v1/ports", timeout=60.0)["ports"]
        write_json(self.ports, neutron_ports(ports))
        return len(ports)


def replace_agent(
    state: DemoState, chain: Chain, python: Path, workers: int | None, progress: Progress
) -> NeutronAgent:
    """Stop our agent and start neutron's on its socket, forwarding to our metadata API."""
    chain.stop_service("agent")
    folder = Path(state.workdir) / "neutron-agent"
    folder.mkdir(parents=True, exist_ok=True)
    ports = folder / "ports.json"
    write_json(ports, {"ports": []})
    shown = "neutron's default (half the CPUs)" if workers is None else str(workers)
    progress(f"starting neutron's metadata agent instead of ours (workers: {shown})")
    service = start_neutron_agent(
        python,
        folder,
        socket_path=chain.agent_socket,
        nova_port=chain.metadata_port,
        secret=chain.secret,
        ports=ports,
        workers=workers,
    )
    # `down` stops it with the rest; its command line names its config file.
    state.processes.append(
        Process("neutron-agent", service.pid, str(folder / "metadata_agent.ini"))
    )
    state.save()
    service.wait(unix_ready(chain.agent_socket))
    return NeutronAgent(python, service, ports)


def start_haproxies(
    state: DemoState, agent: NeutronAgent, chain: Chain, sites: list[HaproxySite]
) -> list[int]:
    """One haproxy per serving namespace, configured by neutron's own code."""
    commands = neutron_haproxy_configs(
        agent.python, Path(state.workdir) / "haproxy", chain.agent_socket, sites
    )
    pids = []
    try:
        for command in commands:
            pid = start_haproxy(command)
            pids.append(pid)
            state.processes.append(Process("haproxy", pid, str(command.argv[-1])))
    finally:
        state.save()
    return pids


def side_by_side(reports: dict[str, dict[str, Any]]) -> str:
    """The two runs' numbers, one column each."""
    rows = [
        ("guests", "instances"),
        ("requests", "requests"),
        ("errors", "errors"),
        ("crawls complete", "crawls_complete"),
        ("storm (s)", "wall_s"),
        ("req/s", "req_s"),
        ("p50 (ms)", "p50_ms"),
        ("p90 (ms)", "p90_ms"),
        ("p99 (ms)", "p99_ms"),
        ("max (ms)", "max_ms"),
    ]
    names = list(reports)
    width = max(14, *(len(n) + 2 for n in names))
    lines = ["".ljust(18) + "".join(n.rjust(width) for n in names)]
    for label, key in rows:
        lines.append(label.ljust(18) + "".join(str(r[key]).rjust(width) for r in reports.values()))
    for name, report in reports.items():
        kinds = report["errors_by_kind"]
        if kinds:
            shown = ", ".join(f"{kind} x{count}" for kind, count in kinds.items())
            lines.append(f"errors behind {name}: {shown}")
        steps = {s: v["errors"] for s, v in report["per_step"].items() if v["errors"]}
        if steps:
            lines.append(f"  by crawl step: {steps}")
    return "\n".join(lines)
