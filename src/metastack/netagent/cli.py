"""`metastack netagent`: run the network agent (DHCP and router namespaces of this host)."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import click

from metastack.errors import ConfigError
from metastack.logs import setup_logging
from metastack.metrics import NetagentMetrics, new_registry
from metastack.netagent.config import NetagentConfig, load_netagent_config
from metastack.netns.dnsmasq import unsearchable_folder
from metastack.runner import RunConfig, Runner
from metastack.tls import ca_file_problem


@click.command("netagent")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--control-url", multiple=True, help="Control API base URL; repeat for several.")
@click.option("--host", help="This node's agent name (its DHCP ports' device_id is dhcp-<host>).")
@click.option("--state-path", help="Directory for dnsmasq files (<state_path>/dhcp/<network>).")
@click.option("--fabric-netns", help="Namespace holding the bridges ('' = the host's own).")
@click.option("--namespace-prefix", help="Prefix of qdhcp-/qrouter- namespace names.")
@click.option(
    "--bridge-name-template", help="Bridge name of a network, e.g. ms-br-{network_id:.8}."
)
@click.option("--proxy-control-socket", help="The proxy's control API unix socket.")
@click.option("--dnsmasq-binary", help="dnsmasq executable.")
@click.option(
    "--network", "networks", multiple=True, help="Serve this network, not the scheduled ones."
)
@click.option(
    "--router", "routers", multiple=True, help="Serve this router, not the scheduled ones."
)
@click.option(
    "--capability",
    "capabilities",
    multiple=True,
    type=click.Choice(["dhcp", "l3", "metadata"]),
    help="What this node offers the scheduler (repeatable; default all three).",
)
@click.option("--report-interval", type=float, help="Seconds between state reports.")
@click.option("--enable-isolated-metadata/--disable-isolated-metadata", default=None)
@click.option("--force-metadata/--no-force-metadata", default=None)
@click.option("--resync-interval", type=float, help="Seconds between full resyncs.")
@click.option("--respawn-interval", type=float, help="Seconds between liveness checks.")
@click.option("--once", is_flag=True, help="Do one full pass and exit (1 if it had errors).")
@click.option(
    "--cleanup",
    is_flag=True,
    help="Remove this agent's namespaces, dnsmasqs and listeners, then exit.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Overrides [netagent] log_level.",
)
@click.option("--log-format", type=click.Choice(["text", "json"]), help="text or json lines.")
@click.option("--metrics-listen", help="HOST:PORT of /metrics, /healthz, /readyz.")
@click.option("--check", is_flag=True, help="Validate the config (file, env, flags) and exit.")
def netagent_command(
    config_path: str | None, once: bool, cleanup: bool, check: bool, **flags: Any
) -> None:
    """Reconcile qdhcp-/qrouter- namespaces, dnsmasq and proxy listeners with the control API.

    The admin token is read from the config file (admin_token or admin_token_file) or
    METASTACK_NETAGENT_ADMIN_TOKEN, never flags.
    """
    overrides = {
        key: list(value) if isinstance(value, tuple) else value
        for key, value in flags.items()
        if value not in (None, ())
    }
    if isinstance(overrides.get("log_level"), str):
        overrides["log_level"] = str(overrides["log_level"]).lower()
    try:
        config = load_netagent_config(config_path, os.environ, overrides)
    except ConfigError as exc:
        click.echo(f"metastack netagent: {exc}", err=True)
        sys.exit(2)
    problem = ca_file_problem("netagent.control_ca_file", config.control_ca_file)
    if problem is not None:
        click.echo(f"metastack netagent: {problem}", err=True)
        sys.exit(2)
    setup_logging(config.log_level, config.log_format)
    folder = None if config.dnsmasq_user == "root" else unsearchable_folder(config.state_path)
    if folder is not None and not cleanup:
        click.echo(
            f"metastack netagent: netagent.state_path: {folder} is not searchable by other "
            "users, so dnsmasq "
            f"(which drops to {config.dnsmasq_user or 'nobody'}) could not read its files "
            f"under state_path {config.state_path}; choose a state_path under "
            "world-searchable folders (or chmod o+x the folder)",
            err=True,
        )
        sys.exit(2)
    if check:
        click.echo(f"metastack netagent: {config_path or 'defaults'}: OK")
        sys.exit(0)
    if cleanup:
        from metastack.netagent.service import teardown

        removed = teardown(config)
        click.echo(f"removed {len(removed)} namespaces")
        return
    if once:
        sys.exit(asyncio.run(_once(config)))
    from metastack.netagent.service import NetagentService

    registry = new_registry()
    service = NetagentService(config, NetagentMetrics(registry))
    sys.exit(Runner(RunConfig.of("netagent", config), service, registry=registry).run())


async def _once(config: NetagentConfig) -> int:
    from metastack.client.http import ControlApiError
    from metastack.netagent.service import NetAgent

    agent = NetAgent(config)
    try:
        report = await agent.reconcile(full=True)
    except ControlApiError as exc:
        logging.getLogger("metastack.netagent").error("control API: %s", exc)
        return 1
    finally:
        await agent.client.close()
    return 1 if report.errors else 0
