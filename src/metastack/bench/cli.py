"""`metastack bench bootstorm`: the boot-storm benchmark through the whole chain."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import click

from metastack.errors import MetastackError


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


def _counters(counters: dict[str, int]) -> str:
    """The non-zero counters, or that every one of them stayed at zero."""
    named = ", ".join(f"{k} {v}" for k, v in counters.items() if v)
    return named or f"{', '.join(counters)} all 0"


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"instances {report['instances']} over {report['networks']} networks "
        f"({report['routed_networks']} routed), proxy {report['proxy']}",
        f"setup {report['setup_s']} s (instances created in {report['create_instances_s']} s; "
        f"addressing: {report['addressing']['dhcp']} by DHCP, "
        f"{report['addressing']['static']} static)",
        f"storm {report['wall_s']} s: {report['requests']} requests, {report['req_s']} req/s, "
        f"errors {report['errors']} {report['errors_by_kind'] or ''}",
        f"latency p50 {report['p50_ms']} ms, p90 {report['p90_ms']} ms, "
        f"p99 {report['p99_ms']} ms, max {report['max_ms']} ms",
        f"crawls complete {report['crawls_complete']}/{report['instances']}, "
        f"slowest done at {report['crawl_max_s']} s",
        f"sequence_ok {report['sequence_ok']} "
        f"({len(report['sequence_checks'])} guests checked with real cloud-init)",
        f"machine CPU during the storm {report['machine_cpu_s']} s: interrupts and softirqs "
        f"{report['irq_cpu_s']} s (mostly within the processes' own), outside the processes "
        f"below {report['other_cpu_s']} s, stolen by the hypervisor {report['steal_cpu_s']} s "
        f"(load before: "
        f"{' '.join(report['load_average_before'])}); packets dropped at full input "
        f"backlogs {report['backlog_drops']}",
        f"TCP in the serving namespaces: {_counters(report['tcp']['server_side'])}; "
        f"in the guests: {_counters(report['tcp']['guests'])}",
        "process      peak RSS MB   CPU s",
    ]
    for name, rss in report["rss_mb"].items():
        count = report["process_counts"].get(name, 1)
        label = f"{name} x{count}" if count > 1 else name
        lines.append(f"  {label:<16} {rss:>8}   {report['cpu_s'].get(name, 0.0):>6}")
    return "\n".join(lines)


@click.group("bench")
def bench_command() -> None:
    """Benchmarks on this machine (root; guests are network namespaces)."""


@bench_command.command("bootstorm")
@click.option("--instances", type=click.IntRange(1, 5000), required=True, help="Guests (N).")
@click.option(
    "--networks",
    type=click.IntRange(2, 2000),
    help="Networks (M), half of them routed [default: ceil(N/250), at least 2].",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--proxy",
    type=click.Choice(["metastack", "haproxy"]),
    default="metastack",
    show_default=True,
    help="Namespace proxy: ours, or one haproxy per namespace configured as neutron does.",
)
@click.option(
    "--dhcp-per-network",
    type=click.IntRange(0, 50),
    default=1,
    show_default=True,
    help="Guests per network configured by DHCP; the rest get the same settings by `ip`.",
)
@click.option(
    "--probes",
    type=click.IntRange(0, 20),
    default=4,
    show_default=True,
    help="Guests where real cloud-init runs after the storm to check the URL sequence.",
)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Per request (s).")
@click.option(
    "--deadline", type=float, default=300.0, show_default=True, help="Whole storm at most (s)."
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Work directory (removed at the end) [default: a new one under /var/tmp].",
)
def bootstorm_command(
    instances: int,
    networks: int | None,
    json_path: Path | None,
    plot_path: Path | None,
    proxy: str,
    dhcp_per_network: int,
    probes: int,
    timeout: float,
    deadline: float,
    workdir: Path | None,
) -> None:
    """Boot INSTANCES guests at once: each crawls metadata as cloud-init does (OpenStack, then
    EC2); report latency, errors, CPU and memory; remove everything afterwards."""
    from metastack.bench.bootstorm import Options, bootstorm, write_outputs

    if os.geteuid() != 0:
        click.echo("metastack bench bootstorm: needs root (namespaces, dnsmasq)", err=True)
        sys.exit(2)
    options = Options(
        instances,
        networks,
        "haproxy" if proxy == "haproxy" else "metastack",
        dhcp_per_network,
        probes,
        timeout,
        deadline,
        workdir,
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = bootstorm(options, _progress)
    except (MetastackError, OSError) as exc:
        click.echo(f"metastack bench bootstorm: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("metastack bench bootstorm: interrupted; everything was removed", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    write_outputs(report, json_path, plot_path)
    click.echo(_table(report))
    failed = report["errors"] or report["crawls_complete"] < instances
    sys.exit(1 if failed or not report["sequence_ok"] else 0)


@bench_command.command("neutron-agent")
@click.option(
    "--instances", type=click.IntRange(1, 5000), default=100, show_default=True, help="Guests."
)
@click.option("--networks", type=click.IntRange(2, 2000), help="Networks, half of them routed.")
@click.option(
    "--agent-workers",
    type=click.IntRange(0, 64),
    help="neutron's metadata_workers [default: neutron's own, half the CPUs].",
)
@click.option("--probes", type=click.IntRange(0, 20), default=2, show_default=True)
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Per request (s).")
@click.option("--deadline", type=float, default=300.0, show_default=True, help="Each storm (s).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--upstream-python",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Python of the environment with neutron [default: ./.upstream-venv/bin/python, "
    "built by scripts/upstream-venv].",
)
def neutron_agent_command(
    instances: int,
    networks: int | None,
    agent_workers: int | None,
    probes: int,
    timeout: float,
    deadline: float,
    json_path: Path | None,
    upstream_python: Path | None,
) -> None:
    """Boot INSTANCES guests at once with neutron's real metadata agent (29.0.0) in our
    agent's place, twice: behind our proxy, then behind haproxy configured by neutron's
    code; errors and latency side by side. Exit 1 when our proxy gave guests more errors."""
    import json

    from metastack.bench.bootstorm import Options, bootstorm
    from metastack.bench.neutron import side_by_side
    from metastack.lab.upstream import UpstreamError, find_python

    if os.geteuid() != 0:
        click.echo("metastack bench neutron-agent: needs root (namespaces, dnsmasq)", err=True)
        sys.exit(2)
    try:
        python = upstream_python or find_python(Path.cwd())
    except UpstreamError as exc:
        click.echo(f"metastack bench neutron-agent: {exc}", err=True)
        sys.exit(2)
    reports: dict[str, dict[str, Any]] = {}
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        for proxy in ("metastack", "haproxy"):
            options = Options(
                instances, networks, "haproxy" if proxy == "haproxy" else "metastack",
                1, probes, timeout, deadline, None, "neutron", python, agent_workers,
            )  # fmt: skip
            report = bootstorm(options, _progress)
            report.pop("_storm")
            reports["our proxy" if proxy == "metastack" else "haproxy"] = report
    except (MetastackError, OSError) as exc:
        click.echo(f"metastack bench neutron-agent: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("metastack bench neutron-agent: interrupted; everything was removed", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if json_path is not None:
        json_path.write_text(json.dumps(reports, indent=2) + "\n")
    workers = "neutron's default" if agent_workers is None else agent_workers
    click.echo(f"neutron's metadata agent 29.0.0 (workers: {workers}) behind each proxy:")
    click.echo(side_by_side(reports))
    sys.exit(1 if reports["our proxy"]["errors"] > reports["haproxy"]["errors"] else 0)
