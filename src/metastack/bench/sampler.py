"""CPU and peak RSS of the chain's processes, sampled from /proc while the storm runs."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from metastack.lab.chain import sample_process
from metastack.netns.sockets import read_net_file

Targets = Callable[[], dict[str, list[int]]]
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> tuple[float, float, float]:
    """CPU seconds the machine spent busy (all cores, not idle or iowait), of those in
    interrupts and softirqs (where the kernel moves packets across veths and bridges), and
    stolen by the hypervisor (a virtual machine's cores running someone else's work)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]
    steal = fields[7] if len(fields) > 7 else 0
    return busy / _CLK_TCK, (fields[5] + fields[6]) / _CLK_TCK, steal / _CLK_TCK


def backlog_drops() -> int:
    """Packets the kernel dropped because a CPU's input backlog was full (every veth hop
    queues there); a dropped SYN costs its connection a 1 s retransmission."""
    lines = Path("/proc/net/softnet_stat").read_text().splitlines()
    return sum(int(line.split()[1], 16) for line in lines if line.strip())


# TCP counters that explain slow connections: a SYN the server could not queue (then the
# guest retransmits it after 1 s), and segments sent again.
TCP_COUNTERS = (
    "ListenOverflows",
    "ListenDrops",
    "TCPReqQFullDrop",
    "SyncookiesSent",
    "TCPSynRetrans",
    "RetransSegs",
)


def _counters(text: str) -> dict[str, int]:
    """name -> value of a /proc/net/netstat or snmp file (header line, value line pairs)."""
    found: dict[str, int] = {}
    lines = text.splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        for name, value in zip(names.split()[1:], values.split()[1:], strict=False):
            if value.lstrip("-").isdigit():
                found[name] = int(value)
    return found


def tcp_counters(namespaces: Iterable[str]) -> dict[str, int]:
    """The TCP_COUNTERS summed over network namespaces."""
    total = dict.fromkeys(TCP_COUNTERS, 0)
    for netns in namespaces:
        seen = _counters(read_net_file(netns, "netstat")) | _counters(read_net_file(netns, "snmp"))
        for name in TCP_COUNTERS:
            total[name] += seen.get(name, 0)
    return total


@dataclass
class Usage:
    """Per process name: CPU seconds used while sampling, and peak RSS (summed over PIDs)."""

    cpu_s: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    machine_cpu_s: float = 0.0  # every process on the machine, ours and others'
    irq_cpu_s: float = 0.0
    steal_cpu_s: float = 0.0
    backlog_drops: int = 0


class Sampler:
    """A thread that samples `targets()` (name -> PIDs) every `interval` seconds."""

    def __init__(self, targets: Targets, interval: float = 0.2) -> None:
        self.targets = targets
        self.interval = interval
        self._stop = threading.Event()
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._busy = (0.0, 0.0, 0.0)
        self._drops = 0
        self.usage = Usage()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        """Take a first sample now, then keep sampling in the background."""
        self._busy = machine_busy_seconds()
        self._drops = backlog_drops()
        self._sample()
        self._thread.start()

    def stop(self) -> Usage:
        """Take a last sample and return what was seen."""
        self._stop.set()
        self._thread.join()
        self._sample()
        busy, irq, steal = machine_busy_seconds()
        self.usage.steal_cpu_s = round(steal - self._busy[2], 2)
        self.usage.backlog_drops = backlog_drops() - self._drops
        self.usage.machine_cpu_s = round(busy - self._busy[0], 2)
        self.usage.irq_cpu_s = round(irq - self._busy[1], 2)
        for pid, cpu in self._last.items():
            name = self._names[pid]
            used = cpu - self._first.get(pid, cpu)
            self.usage.cpu_s[name] = round(self.usage.cpu_s.get(name, 0.0) + used, 2)
        return self.usage

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        for name, pids in self.targets().items():
            rss = 0
            seen = 0
            for pid in pids:
                sample = sample_process(pid)
                if sample is None:
                    continue
                seen += 1
                rss += sample.rss_bytes
                self._names[pid] = name
                self._first.setdefault(pid, sample.cpu_seconds)
                self._last[pid] = sample.cpu_seconds
            mb = round(rss / 2**20, 1)
            self.usage.peak_rss_mb[name] = max(self.usage.peak_rss_mb.get(name, 0.0), mb)
            self.usage.count[name] = max(self.usage.count.get(name, 0), seen)
