"""`metastack bench ...`: every benchmark, one subcommand each.

The code of each lives beside this module and is imported only when its command runs;
results go to docs/bench/ by default (relative to the current folder: run from a checkout).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, Literal, TypeVar, cast

import click

from metastack.errors import MetastackError

F = TypeVar("F", bound=Callable[..., Any])


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up as Ctrl-C does


@contextlib.contextmanager
def _guarded(name: str) -> Iterator[None]:
    """Run a benchmark: SIGTERM cleans up as Ctrl-C does; its errors end the command with a
    message (exit status 1, 130 when interrupted)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    except (MetastackError, OSError) as exc:
        click.echo(f"metastack bench {name}: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo(f"metastack bench {name}: interrupted; everything was removed", err=True)
        sys.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _need_root(name: str, what: str) -> None:
    if os.geteuid() != 0:
        click.echo(f"metastack bench {name}: needs root ({what})", err=True)
        sys.exit(2)


def join_values(args: Sequence[str], names: Sequence[str]) -> list[str]:
    """`--name 1 10 100` (several values after one flag) as `--name 1,10,100`."""
    joined: list[str] = []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        joined.append(arg)
        if arg == "--":
            return joined + rest
        if arg in names:
            values = []
            while rest and not rest[0].startswith("-"):
                values.append(rest.pop(0))
            joined.append(",".join(values))
    return joined


class SeveralValues(click.Command):
    """A command whose `several` flags take one or more values after them, as argparse's
    nargs="+": `--concurrency 1 10 100` (or `--concurrency 1,10,100`)."""

    several = ("--concurrency",)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, join_values(args, self.several))


def _levels(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        levels = tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: whole numbers, comma-separated") from None
    if not levels or min(levels) < 1:
        raise click.BadParameter(f"{value!r}: at least one level, each 1 or more")
    return levels


def _counters(counters: dict[str, int]) -> str:
    """The non-zero counters, or that every one of them stayed at zero."""
    named = ", ".join(f"{k} {v}" for k, v in counters.items() if v)
    return named or f"{', '.join(counters)} all 0"


def _table(report: dict[str, Any]) -> str:
    lines = [
        f"instances {report['instances']} over {report['networks']} networks "
        f"({report['routed_networks']} routed), proxy {report['proxy']}; "
        f"{report['api_nodes']} API and {report['network_nodes']} network nodes on "
        f"{report['database']} (guests per network node: "
        f"{', '.join(f'{k} {v}' for k, v in report['guests_per_network_node'].items())})",
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


def _usage(name: str, check: Callable[[], None]) -> None:
    """Run `check`; a usage error it raises ends the command with exit status 2."""
    from metastack.demo.errors import DemoUsageError

    try:
        check()
    except DemoUsageError as exc:
        click.echo(f"metastack bench {name}: {exc}", err=True)
        sys.exit(2)


WORKDIR = click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Work directory (removed at the end) [default: a new one under /var/tmp].",
)


def _nodes_option(flag: str, what: str, default: int) -> Callable[[F], F]:
    return click.option(
        flag,
        type=click.IntRange(1, 8),
        default=default,
        show_default=True,
        help=f"{what}, each a namespace of its own as in `metastack demo up` (1 and 1: the "
        "chain in the host's namespace).",
    )


API_NODES = _nodes_option("--api-nodes", "API nodes", 1)
NETWORK_NODES = _nodes_option("--network-nodes", "Network nodes", 1)
DATABASE = click.option(
    "--database",
    default="",
    help="PostgreSQL URL (several API nodes need it, through its unix socket: "
    "postgresql+psycopg://postgres@/NAME?host=/var/run/postgresql); the run uses a database "
    "of its own on that server, NAME_<run>, dropped at the end [default: SQLite].",
)


@click.group("bench")
def bench_command() -> None:
    """Benchmarks on this machine (those with guests need root: they are namespaces)."""


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
@WORKDIR
@API_NODES
@NETWORK_NODES
@DATABASE
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
    api_nodes: int,
    network_nodes: int,
    database: str,
) -> None:
    """N guests boot at once and crawl metadata as cloud-init does.

    Each crawls OpenStack, then EC2; reports latency, errors, CPU and memory; removes
    everything afterwards. With more than one API or network node, every node is a
    namespace of its own (as in `metastack demo up`) and the guests are spread over
    networks served by different network nodes."""
    from metastack.bench.bootstorm import Options, bootstorm, check, write_outputs

    options = Options(
        instances,
        networks,
        "haproxy" if proxy == "haproxy" else "metastack",
        dhcp_per_network,
        probes,
        timeout,
        deadline,
        workdir,
        api_nodes=api_nodes,
        network_nodes=network_nodes,
        database=database,
    )
    _usage("bootstorm", lambda: check(options))
    _need_root("bootstorm", "namespaces, dnsmasq")
    with _guarded("bootstorm"):
        report = bootstorm(options, _progress)
    write_outputs(report, json_path, plot_path)
    click.echo(_table(report))
    failed = report["errors"] or report["crawls_complete"] < instances
    sys.exit(1 if failed or not report["sequence_ok"] else 0)


RESULTS = Path("docs/bench")


@bench_command.command("freshness")
@click.option(
    "--writes", type=click.IntRange(1, 100000), default=200, show_default=True, help="Writes."
)
@click.option(
    "--api-nodes",
    type=click.IntRange(1, 8),
    default=2,
    show_default=True,
    help="API nodes: the writes go to the first, the guest's agent knows only the last.",
)
@click.option(
    "--network-nodes",
    type=click.IntRange(1, 8),
    default=2,
    show_default=True,
    help="Network nodes: the guest reads through the last one's router.",
)
@DATABASE
@click.option(
    "--time-limit",
    type=click.FloatRange(1, 3600),
    default=120.0,
    show_default=True,
    help="Seconds for the writes: no write starts after it (setup and cleanup not counted).",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path))
@WORKDIR
def freshness_command(
    writes: int,
    api_nodes: int,
    network_nodes: int,
    database: str,
    time_limit: float,
    json_path: Path | None,
    workdir: Path | None,
) -> None:
    """How soon a guest sees a metadata change written through another API node.

    Each write changes one metadata key of an instance through the first API node's control
    API; the instance's guest reads meta_data.json through a network node whose agent knows
    only the last API node, 5 ms after the acknowledgement and every 5 ms until it sees the
    new value, then 4 times more. Reports acknowledgement to first fresh read (p50, p99,
    max), stale first reads and stale reads after a fresh one. Exit 1 when any read was
    stale, a write was never seen or anything failed; removes everything it made."""
    from metastack.bench.freshness import Options, check, freshness

    options = Options(writes, api_nodes, network_nodes, database, time_limit, workdir)
    _usage("freshness", lambda: check(options))
    _need_root("freshness", "namespaces, dnsmasq")
    with _guarded("freshness"):
        report = freshness(options, _progress)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    click.echo(
        f"{report['writes']} writes through api-1, read from {report['reader']}: "
        f"acknowledgement to first fresh read p50 {report['p50_ms']} ms, p90 "
        f"{report['p90_ms']} ms, p99 {report['p99_ms']} ms, max {report['max_ms']} ms\n"
        f"stale first reads {report['stale_first_reads']}, stale reads after a fresh one "
        f"{report['stale_reads']}, never fresh {report['never_fresh']}; write errors "
        f"{report['write_errors']}, read errors {report['read_errors']} of {report['reads']} "
        f"reads (read p50 {report['read_p50_ms']} ms)"
    )
    missed = (
        report["stale_reads"]
        or report["stale_first_reads"]
        or report["never_fresh"]
        or report["write_errors"]
        or report["read_errors"]
        or not report["complete"]
    )
    sys.exit(1 if missed else 0)


@bench_command.command("chain")
@click.option(
    "--duration", type=int, default=8, show_default=True, help="Seconds per run (max 30)."
)
@click.option(
    "--concurrency",
    default="1,10,100",
    show_default=True,
    callback=_levels,
    help="Comma-separated levels.",
)
@click.option("--paths", default="dhcp,router", show_default=True, help="dhcp and/or router.")
@click.option("--api-workers", type=int, default=2, show_default=True)
@click.option("--close", is_flag=True, help="A new connection per request (as cloud-init).")
@click.option(
    "--wait-quiet",
    type=float,
    default=30.0,
    show_default=True,
    help="Before each run, wait up to this many seconds for other load to fall away.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=RESULTS / "chain.json",
    show_default=True,
)
def chain_command(
    duration: int,
    concurrency: tuple[int, ...],
    paths: str,
    api_workers: int,
    close: bool,
    wait_quiet: float,
    output: Path,
) -> None:
    """The whole chain: wrk in a guest namespace -> proxy -> agent -> API.

    About a minute: req/s, latency, errors, CPU per request and RSS of every process, on
    the DHCP and the router path; removes everything it made."""
    from metastack.bench.chain import Options, run_chain

    chosen = tuple(p.strip() for p in paths.split(",") if p.strip())
    with _guarded("chain"):
        run_chain(Options(duration, concurrency, chosen, api_workers, close, wait_quiet, output))


@bench_command.command("metadata-api")
@click.option("--duration", type=int, default=10, show_default=True, help="seconds per run")
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--instances", type=int, default=100, show_default=True)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=RESULTS / "metadata_api.json",
    show_default=True,
)
def metadata_api_command(duration: int, workers: int, instances: int, json_path: Path) -> None:
    """The metadata API alone: signed requests from wrk.

    Concurrency 10 and 100, SQLite, documents cached; needs no root."""
    from metastack.bench.metadata_api import Options, run_metadata_api

    with _guarded("metadata-api"):
        run_metadata_api(Options(duration, workers, instances, json_path))


@bench_command.command("agent-load", cls=SeveralValues)
@click.option("--requests", type=int, default=20000, show_default=True, help="requests per run")
@click.option(
    "--concurrency",
    default="1,10,100",
    show_default=True,
    callback=_levels,
    help="Levels, space- or comma-separated: --concurrency 1 10 100.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1, clamp=True),
    default=3,
    show_default=True,
    help="runs per concurrency",
)
@click.option("--max-seconds", type=float, default=30.0, show_default=True, help="cap per run")
@click.option(
    "--cache-expiration", type=float, default=60.0, show_default=True, help="0 = no cache"
)
@click.option(
    "--loop", type=click.Choice(["uvloop", "asyncio"]), default="uvloop", show_default=True
)
@click.option(
    "--py-spy",
    type=click.Path(dir_okay=False, path_type=Path),
    help="profile output (.raw or speedscope)",
)
@click.option(
    "--api",
    type=click.Choice(["lean", "aiohttp"]),
    default="lean",
    show_default=True,
    help="metadata API stand-in: lean (http11, cheap) or aiohttp",
)
@click.option(
    "--agent-src",
    type=click.Path(file_okay=False, path_type=Path),
    help="run the agent from this src/ instead",
)
def agent_load_command(
    requests: int,
    concurrency: tuple[int, ...],
    rounds: int,
    max_seconds: float,
    cache_expiration: float,
    loop: str,
    py_spy: Path | None,
    api: str,
    agent_src: Path | None,
) -> None:
    """The metadata agent alone, over its unix socket.

    In front of stand-in APIs: req/s, p50/p99, errors, agent CPU per request and RSS (the
    median of --rounds runs); needs no root."""
    from metastack.bench.agent_load import Options, run_agent_load

    options = Options(
        requests,
        concurrency,
        rounds,
        max_seconds,
        cache_expiration,
        cast(Literal["uvloop", "asyncio"], loop),
        py_spy,
        cast(Literal["lean", "aiohttp"], api),
        agent_src,
    )
    with _guarded("agent-load"):
        run_agent_load(options)


@bench_command.command("proxy-listeners")
@click.option("--count", type=int, default=1000, show_default=True, help="listeners (max 5000)")
@click.option("--wrk-seconds", type=int, default=0, show_default=True, help="0 = no load test")
@click.option(
    "--event-loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    default="auto",
    show_default=True,
)
def proxy_listeners_command(count: int, wrk_seconds: int, event_loop: str) -> None:
    """One proxy process, a listener in each of COUNT namespaces.

    Its RSS, and req/s through one of them with --wrk-seconds; removes what it made."""
    from metastack.bench.proxy_listeners import run_proxy_listeners

    _need_root("proxy-listeners", "network namespaces")
    with _guarded("proxy-listeners"):
        results = run_proxy_listeners(max(1, min(count, 5000)), min(wrk_seconds, 60), event_loop)
    click.echo(json.dumps(results, indent=2))


@bench_command.command("soak")
@click.option(
    "--duration",
    type=click.FloatRange(0, 4 * 3600, min_open=True),
    default=1800.0,
    show_default=True,
    help="measured seconds",
)
@click.option(
    "--warmup",
    type=click.FloatRange(0, 600),
    default=75.0,
    show_default=True,
    help="seconds of load before the first sample (longer than the agent's cache lifetime)",
)
@click.option(
    "--rate",
    type=click.FloatRange(0, min_open=True),
    help="total req/s [default: measured max x --fraction]",
)
@click.option("--fraction", type=float, default=0.5, show_default=True, help="of the measured max")
@click.option("--sample-every", type=float, default=30.0, show_default=True)
@click.option("--max-growth", type=float, default=10.0, show_default=True, help="percent")
@click.option("--timeout", type=float, default=20.0, show_default=True, help="seconds per request")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=RESULTS / "soak.json",
    show_default=True,
    help="where the report goes",
)
def soak_command(
    duration: float,
    warmup: float,
    rate: float | None,
    fraction: float,
    sample_every: float,
    max_growth: float,
    timeout: float,
    json_path: Path,
) -> None:
    """Half the maximum through the whole chain, for long: no error, no growth.

    From two demo guests for --duration seconds; fails (exit 1) on any error, restart, or
    RSS or descriptor growth over --max-growth percent; exit 2 when it could not run."""
    from metastack.bench.soak import Options, run_soak

    options = Options(
        duration, warmup, rate, fraction, sample_every, max_growth, timeout, json_path
    )
    sys.exit(run_soak(options))


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
