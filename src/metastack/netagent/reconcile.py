"""Apply desired state to the kernel, dnsmasq and the proxy, touching only what differs."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from metastack.errors import UpstreamUnavailable
from metastack.netagent.config import NetagentConfig
from metastack.netagent.desired import Desired, Listener, NamespaceSpec
from metastack.netagent.diff import (
    delete_namespaces,
    diff_bridges,
    diff_namespace,
    listeners_to_put,
    stale_namespaces,
)
from metastack.netns import dnsmasq
from metastack.netns.apply import apply, list_netns
from metastack.netns.exec import NetnsError
from metastack.netns.inspect import LinkState, read_fabric, read_namespace, read_rules
from metastack.netns.plan import AddNetns, LinkUp, Step
from metastack.proxy.client import ProxyClient

log = logging.getLogger(__name__)


@dataclass
class Report:
    """What one pass did, for logs and tests."""

    steps: int = 0
    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    dnsmasq_started: list[str] = field(default_factory=list)
    dnsmasq_reloaded: list[str] = field(default_factory=list)
    dnsmasq_adopted: list[str] = field(default_factory=list)
    listeners_put: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the pass touched anything."""
        return bool(
            self.steps
            or self.deleted
            or self.dnsmasq_started
            or self.dnsmasq_reloaded
            or self.listeners_put
        )


class Reconciler:
    """Holds what was last applied, the dnsmasq PIDs it watches and the wanted listeners.

    Blocking (subprocesses, files, the proxy's control socket): the service calls it from
    a worker thread, one call at a time.
    """

    def __init__(self, config: NetagentConfig, proxy: ProxyClient | None = None) -> None:
        self.config = config
        self.proxy = proxy or ProxyClient(config.proxy_control_socket, timeout=10.0)
        self.desired = Desired(config.fabric_netns)
        self.applied: dict[str, NamespaceSpec] = {}
        self.pids: dict[str, int] = {}  # network id -> dnsmasq PID
        self.dhcp_dir = Path(config.state_path) / "dhcp"

    @property
    def prefixes(self) -> tuple[str, str]:
        """Name prefixes of the namespaces this agent owns."""
        prefix = self.config.namespace_prefix
        return (f"{prefix}qdhcp-", f"{prefix}qrouter-")

    def files(self, network_id: str) -> dnsmasq.DnsmasqFiles:
        """Where a network's dnsmasq keeps its pid, hosts and options files."""
        return dnsmasq.DnsmasqFiles(self.dhcp_dir / network_id)

    def argv(self, network_id: str, config: dnsmasq.DnsmasqConfig) -> tuple[str, ...]:
        """The dnsmasq command line of a network."""
        return dnsmasq.command_line(
            config, self.files(network_id), self.config.dnsmasq_binary, self.config.dnsmasq_user
        )

    # -- one pass -----------------------------------------------------------------------

    def apply(self, desired: Desired, *, full: bool) -> Report:
        """Make the host match `desired`. `full` observes every namespace; otherwise only
        those whose spec changed since the last pass (the kernel is trusted in between)."""
        report = Report()
        present = set(list_netns())
        stale = stale_namespaces(present, desired.namespaces, self.prefixes)
        self.desired = desired
        if stale:
            self._drop_listeners(stale, report)
        self._stop_stale_dnsmasq(desired, report)
        if stale:
            self._run(delete_namespaces(stale), report)
            report.deleted += stale
            for name in stale:
                self.applied.pop(name, None)
        fabric_links = self._fabric(desired, present, report)
        for name, spec in desired.namespaces.items():
            exists = name in present
            if exists and not full and self.applied.get(name) == spec:
                continue
            if fabric_links is None:
                fabric_links = read_fabric(desired.fabric)
            try:
                actual = read_namespace(name) if exists else None
                rules = read_rules(name) if exists and spec.rules is not None else None
            except NetnsError as exc:
                report.errors.append(str(exc))
                continue
            steps = diff_namespace(spec, actual, desired.fabric, fabric_links, rules)
            if self._run(steps, report):
                self.applied[name] = spec
                if not exists:
                    report.created.append(name)
            else:
                self.applied.pop(name, None)
        for network_id, config in desired.dhcp.items():
            self._dnsmasq(network_id, config, report)
        self.sync_listeners(report)
        return report

    def _run(self, steps: list[Step], report: Report) -> bool:
        if not steps:
            return True
        try:
            apply(steps)
        except NetnsError as exc:
            log.error("%s", exc)
            report.errors.append(str(exc))
            return False
        report.steps += len(steps)
        return True

    def _fabric(
        self, desired: Desired, present: set[str], report: Report
    ) -> dict[str, LinkState] | None:
        """Make the fabric namespace and its bridges; the fabric's links if that changed
        nothing (the namespaces' veth peers are judged from them), else None.

        Netagents of several nodes may share one fabric (the multi-node demo's): one that
        finds a bridge (or the namespace) made by another since it looked reads again.
        """
        for attempt in (1, 2):
            steps: list[Step] = []
            if desired.fabric and desired.fabric not in present:
                steps += [AddNetns(desired.fabric), LinkUp(desired.fabric, "lo")]
                have: dict[str, LinkState] = {}
            else:
                try:
                    have = read_fabric(desired.fabric)
                except NetnsError as exc:
                    report.errors.append(str(exc))
                    return None
            steps += diff_bridges(desired.fabric, desired.bridges, have)
            if not steps:
                return have
            try:
                apply(steps)
            except NetnsError as exc:
                if attempt == 1:
                    log.info("fabric changed under this pass (%s); reading it again", exc)
                    present = set(list_netns())
                    continue
                log.error("%s", exc)
                report.errors.append(str(exc))
                return None
            report.steps += len(steps)
            return None
        return None

    # -- dnsmasq ------------------------------------------------------------------------

    def _dnsmasq(self, network_id: str, config: dnsmasq.DnsmasqConfig, report: Report) -> None:
        files = self.files(network_id)
        argv = self.argv(network_id, config)
        try:
            hosts = dnsmasq.write_if_changed(files.hosts, dnsmasq.render_hosts(config))
            opts = dnsmasq.write_if_changed(files.opts, dnsmasq.render_opts(config))
        except OSError as exc:
            report.errors.append(f"dnsmasq files of {network_id}: {exc}")
            return
        pid = dnsmasq.find_running(files, argv, config.netns)
        if pid is not None:
            if self.pids.get(network_id) != pid:
                report.dnsmasq_adopted.append(network_id)
            self.pids[network_id] = pid
            if hosts or opts:
                dnsmasq.reload(pid)  # re-reads hosts and options; leases stay served
                report.dnsmasq_reloaded.append(network_id)
            return
        self._start_dnsmasq(network_id, config, report)

    def _start_dnsmasq(
        self, network_id: str, config: dnsmasq.DnsmasqConfig, report: Report
    ) -> None:
        files = self.files(network_id)
        old = dnsmasq.pid_of(files)
        if old is not None and str(files.pid) in " ".join(dnsmasq.cmdline(old) or ()):
            dnsmasq.stop(old)  # ours, but with another command line or namespace
        try:
            self.pids[network_id] = dnsmasq.start(
                config.netns, self.argv(network_id, config), files
            )
        except NetnsError as exc:
            self.pids.pop(network_id, None)
            log.error("dnsmasq for %s: %s", network_id, exc)
            report.errors.append(str(exc))
            return
        report.dnsmasq_started.append(network_id)
        log.info("dnsmasq for network %s: pid %d", network_id, self.pids[network_id])

    def _stop_stale_dnsmasq(self, desired: Desired, report: Report) -> None:
        known = set(self.pids) | (
            {p.name for p in self.dhcp_dir.iterdir() if p.is_dir()}
            if self.dhcp_dir.is_dir()
            else set()
        )
        for network_id in sorted(known - set(desired.dhcp)):
            files = self.files(network_id)
            pid = self.pids.pop(network_id, None) or dnsmasq.pid_of(files)
            if pid is not None and str(files.pid) in " ".join(dnsmasq.cmdline(pid) or ()):
                dnsmasq.stop(pid)
            shutil.rmtree(files.directory, ignore_errors=True)
            report.deleted.append(f"dnsmasq {network_id}")

    def respawn_dead(self) -> list[str]:
        """Restart every watched dnsmasq whose process is gone; the network ids restarted."""
        restarted = []
        for network_id, pid in list(self.pids.items()):
            config = self.desired.dhcp.get(network_id)
            if config is None or dnsmasq.alive(pid):
                continue
            log.warning("dnsmasq for %s (pid %d) died; restarting", network_id, pid)
            report = Report()
            self._start_dnsmasq(network_id, config, report)
            if report.dnsmasq_started:
                restarted.append(network_id)
        return restarted

    # -- proxy listeners ----------------------------------------------------------------

    def held_listeners(self) -> list[Listener] | None:
        """What the proxy holds now; None if it cannot be reached."""
        try:
            status, document = self.proxy.listeners()
        except UpstreamUnavailable:
            return None
        if status != 200 or not isinstance(document, dict):
            return None
        return [Listener.from_json(item) for item in document.get("listeners", [])]

    def _put(self, listeners: list[Listener], report: Report) -> None:
        try:
            status, document = self.proxy.replace([item.to_json() for item in listeners])
        except UpstreamUnavailable as exc:
            report.errors.append(str(exc))
            return
        report.listeners_put = True
        failed = document.get("failed", []) if isinstance(document, dict) else []
        if status != 200 or failed:
            report.errors.append(f"proxy PUT /listeners: {status} {failed}")

    def sync_listeners(self, report: Report | None = None) -> bool:
        """PUT the wanted listeners if the proxy holds anything else; True if it did."""
        report = report if report is not None else Report()
        held = self.held_listeners()
        if held is None:
            return False
        wanted = listeners_to_put(self.desired.listeners, held, self.prefixes)
        if wanted is None:
            return False
        self._put(wanted, report)
        return report.listeners_put

    def _drop_listeners(self, namespaces: list[str], report: Report) -> None:
        # Before a namespace goes, so the proxy does not keep a socket (and with it the
        # namespace) alive after its name is gone.
        held = self.held_listeners()
        if held is None:
            return
        keep = [item for item in held if item.netns not in set(namespaces)]
        if len(keep) != len(held):
            self._put(keep, report)
