"""The netagent's loops: change feed, periodic resync, and the 2-second liveness watch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence

from metastack.client.feed import Change, Follower
from metastack.client.http import ControlApiError, ControlClient, FeedOf
from metastack.metrics import NetagentMetrics
from metastack.netagent.config import NetagentConfig
from metastack.netagent.desired import Desired, desired_state
from metastack.netagent.proxyproc import ProxyProcess
from metastack.netagent.reconcile import Reconciler, Report
from metastack.netagent.topology import (
    Topology,
    UnknownAgent,
    ensure_dhcp_ports,
    fetch_topology,
)
from metastack.netns import dnsmasq
from metastack.netns.apply import delete_netns, list_netns
from metastack.proxy.client import ProxyClient
from metastack.tasks import cancel_and_wait

log = logging.getLogger("metastack.netagent")
# Resources whose changes can alter a namespace; instance changes never do.
RELEVANT = frozenset({"network", "subnet", "port", "router"})
RETRY_SECONDS = 1.0
PROXY_START_SECONDS = 5.0


class NetAgent:
    """Reconciles this host with the control API until stopped; leaves everything running
    when it stops, so a restart disturbs no guest."""

    def __init__(
        self,
        config: NetagentConfig,
        client: ControlClient | None = None,
        proxy: ProxyClient | None = None,
        metrics: NetagentMetrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics if metrics is not None else NetagentMetrics()
        self.last_pass_ok = False  # readiness: the last reconcile pass succeeded
        self.client = client or ControlClient(
            config.control_urls(),
            config.admin_token,
            timeout=config.feed_wait + 15,
            ca_file=config.control_ca_file,
        )
        self.reconciler = Reconciler(config, proxy)
        self.proxy_process = (
            ProxyProcess(config.proxy_config, config.proxy_control_socket, config.state_path)
            if config.proxy_config
            else None
        )
        self.ready = asyncio.Event()  # set after the first complete pass
        self._dirty = asyncio.Event()
        self._full = asyncio.Event()  # the next pass is a full one (after a resync)
        self._following = False  # the feed was read from a known revision on
        self._lock = asyncio.Lock()
        # While the change feed is healthy, the revision of the last change it showed that
        # concerns this host (None: feed not started or broken); and the topology last
        # read, with that revision as it stood before the read.
        self.topology_revision: int | None = None
        self._topology: tuple[int, Topology] | None = None
        self.reported = False  # this process's first state report went through

    async def report_state(self) -> None:
        """Register this host as an agent, or tell the control API it is still alive."""
        body = {"host": self.config.host, "capabilities": self.config.reported_capabilities}
        await self.client.create("agents", body)
        self.reported = True

    async def desired(self) -> Desired:
        """Fetch the topology (creating DHCP ports where missing) and derive the desired state.

        The first pass reports this host's state before it reads, so that what is to be
        scheduled to it is. A pass while the change feed shows no change for this host
        since the last read reuses that read: a periodic full pass re-reads the kernel,
        not every port again.
        """
        if not self.reported:
            await self.report_state()
        seen = self.topology_revision
        if seen is not None and self._topology is not None and self._topology[0] == seen:
            return desired_state(self._topology[1], self.config)
        try:
            topology = await fetch_topology(self.client, self.config)
        except UnknownAgent:
            self.reported = False  # the next pass registers this host again first
            raise
        if await ensure_dhcp_ports(self.client, topology, self.config):
            topology = await fetch_topology(self.client, self.config)
        self._topology = (seen, topology) if seen is not None else None
        return desired_state(topology, self.config)

    async def reconcile(self, *, full: bool = True) -> Report:
        """One pass; ControlApiError (nothing touched) if the control API is unreachable."""
        started = time.monotonic()
        try:
            desired = await self.desired()
            async with self._lock:
                report = await asyncio.to_thread(self.reconciler.apply, desired, full=full)
        except ControlApiError:
            self._passed(False, started)
            raise
        self._passed(not report.errors, started)
        level = logging.INFO if report.changed or report.errors else logging.DEBUG
        log.log(
            level,
            "%s pass in %.3fs: %d steps, created %s, deleted %s, dnsmasq started %s "
            "reloaded %s, listeners %s, errors %s",
            "full" if full else "change",
            time.monotonic() - started,
            report.steps,
            report.created,
            report.deleted,
            report.dnsmasq_started,
            report.dnsmasq_reloaded,
            "put" if report.listeners_put else "unchanged",
            report.errors,
        )
        # Any completed pass worked from a real topology, so the watch may act on it now.
        self.ready.set()
        return report

    def _passed(self, ok: bool, started: float) -> None:
        self.last_pass_ok = ok
        self.metrics.reconcile_seconds.observe(time.monotonic() - started)
        if not ok:
            self.metrics.reconcile_failures.inc()

    async def watch_once(self) -> None:
        """Restart dead dnsmasqs and re-PUT the proxy's listeners if they differ."""
        if not self.ready.is_set():
            return  # never act on the empty state of a freshly started agent
        async with self._lock:
            await asyncio.to_thread(self._watch)

    def _keep_proxy(self) -> None:
        if self.proxy_process is not None and self.proxy_process.ensure():
            deadline = time.monotonic() + PROXY_START_SECONDS
            while not self.proxy_process.ready() and time.monotonic() < deadline:
                time.sleep(0.02)

    def _watch(self) -> None:
        self._keep_proxy()
        self.reconciler.respawn_dead()
        if self.reconciler.sync_listeners():
            log.warning("proxy listeners differed from the wanted set; re-PUT")

    async def run(self, stop: asyncio.Event) -> None:
        """Run the feed, reconcile and watch loops until `stop` is set."""
        await asyncio.to_thread(self._keep_proxy)  # listeners need it from the first pass
        tasks = [
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            asyncio.create_task(self._feed_loop(), name="feed"),
            asyncio.create_task(self._watch_loop(), name="watch"),
            asyncio.create_task(self._report_loop(), name="report"),
        ]
        try:
            await stop.wait()
        finally:
            await cancel_and_wait(*tasks)
            await self.client.close()

    async def _reconcile_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), max(0.0, next_full - loop.time()))
            full = loop.time() >= next_full or self._full.is_set()
            self._dirty.clear()
            self._full.clear()
            try:
                report = await self.reconcile(full=full)
            except ControlApiError as exc:
                log.warning("control API: %s; keeping everything as it is", exc)
                next_full = loop.time() + RETRY_SECONDS
                continue
            if full:
                next_full = loop.time() + self.config.resync_interval
            if report.errors:
                next_full = min(next_full, loop.time() + RETRY_SECONDS)

    async def _feed_loop(self) -> None:
        """Follow the change feed: relevant changes make a pass; a resync (first contact,
        lost or pruned revisions) makes a full one, with the control API read again."""
        follower = Follower(
            FeedOf(self.client),
            self.config.feed_wait,
            on_resync=self._resync,
            on_changes=self._changed,
            on_live=self._feed_live,
            name="netagent",
        )
        await follower.run()

    def _resync(self, revision: int) -> None:
        if self._following:  # revisions were lost or pruned: observe everything again
            self._full.set()
        self._following = True
        self.topology_revision = revision
        self._dirty.set()

    def _changed(self, changes: Sequence[Change]) -> None:
        relevant = [change.revision for change in changes if self._relevant(change)]
        if relevant:
            self.topology_revision = relevant[-1]
            self._dirty.set()

    def _feed_live(self, live: bool) -> None:
        if not live:  # whatever is missed meanwhile is picked up by a pass
            self._following = False
            self.topology_revision = None
            self._dirty.set()

    def _relevant(self, change: Change) -> bool:
        if change.resource not in RELEVANT:
            return False
        served = self.config.networks
        return not served or change.resource == "router" or change.network_id in served

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.report_interval)
            try:
                await self.report_state()
            except ControlApiError as exc:
                log.warning("state report: %s", exc)

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.respawn_interval)
            try:
                await self.watch_once()
            except Exception:  # the watch must outlive any one failure
                log.exception("liveness watch failed")


class NetagentService:
    """The netagent under the runner: its loops as one task; ready after a good pass."""

    def __init__(self, config: NetagentConfig, metrics: NetagentMetrics | None = None) -> None:
        self.agent = NetAgent(config, metrics=metrics)
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self.agent.run(self._stop), name="netagent")
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._stop is None or self._stop.is_set():
            return
        error = task.exception()
        log.error("the netagent's loops ended: %r; stopping", error, exc_info=error)
        os.kill(os.getpid(), signal.SIGTERM)  # the runner stops; systemd starts it again

    async def ready(self) -> bool:
        """The last reconcile pass succeeded (the control API answered, no step failed)."""
        return self.agent.last_pass_ok

    async def stop(self, timeout: float) -> None:
        """Stop the loops; namespaces, dnsmasqs and the proxy keep serving."""
        if self._stop is not None:
            self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task


def teardown(config: NetagentConfig, proxy: ProxyClient | None = None) -> list[str]:
    """Remove what a netagent with `config` owns: listeners, dnsmasqs, its namespaces.

    The fabric namespace and its bridges stay (guests or VM taps may be plugged in).
    """
    reconciler = Reconciler(config, proxy)
    ours = [name for name in list_netns() if name.startswith(reconciler.prefixes)]
    held = reconciler.held_listeners()
    if held is not None:
        keep = [item for item in held if not item.netns.startswith(reconciler.prefixes)]
        if len(keep) != len(held):
            reconciler.proxy.replace([item.to_json() for item in keep])
    if reconciler.dhcp_dir.is_dir():
        for directory in sorted(reconciler.dhcp_dir.iterdir()):
            files = dnsmasq.DnsmasqFiles(directory)
            pid = dnsmasq.pid_of(files)
            if pid is not None and str(files.pid) in " ".join(dnsmasq.cmdline(pid) or ()):
                dnsmasq.stop(pid)
            for path in (files.pid, files.hosts, files.opts):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                directory.rmdir()
    delete_netns(ours)
    return ours
