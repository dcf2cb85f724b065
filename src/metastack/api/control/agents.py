"""Agents: their routes (list, show, state report, delete) and the periodic scheduling pass
that binds waiting networks and routers and moves them off dead agents."""

from __future__ import annotations

import asyncio
import functools
import logging

from aiohttp import web
from pydantic import create_model

from metastack.api.control.context import CONTEXT, Context, parse_body, respond
from metastack.api.control.table import Param, Route, check_query
from metastack.config import ApiConfig
from metastack.errors import MetastackError
from metastack.store import specs, views
from metastack.store.scheduling import SchedulingPolicy

log = logging.getLogger(__name__)

HOST = Param("host", "only the agent of this host")
AgentList = create_model("AgentList", agents=(list[views.AgentView], ...))


def scheduling_policy(config: ApiConfig) -> SchedulingPolicy:
    """The store's scheduling options from `[api]`."""
    return SchedulingPolicy(
        dhcp_agents_per_network=config.dhcp_agents_per_network,
        max_l3_agents_per_router=config.max_l3_agents_per_router,
        agent_down_time=config.agent_down_time,
        allow_automatic_dhcp_failover=config.allow_automatic_dhcp_failover,
        allow_automatic_l3agent_failover=config.allow_automatic_l3agent_failover,
    )


async def list_agents(request: web.Request) -> web.StreamResponse:
    """GET /v1/agents?host=H: {"agents": [...]}, each with `alive` and its bindings."""
    context = request.app[CONTEXT]
    host = check_query(request, (HOST,)).get("host")
    found = await context.call(functools.partial(context.store.list_agents, host=host))
    return respond({"agents": [agent.model_dump(mode="json") for agent in found]})


async def get_agent(request: web.Request) -> web.StreamResponse:
    """GET /v1/agents/{id}."""
    context = request.app[CONTEXT]
    check_query(request, ())
    return respond(await context.call(context.store.get_agent, request.match_info["id"]))


async def set_agent_state(request: web.Request) -> web.StreamResponse:
    """POST /v1/agents {"host", "capabilities"}: register or heartbeat (neutron's
    report_state); 200 with the agent and what is scheduled to it."""
    context = request.app[CONTEXT]
    check_query(request, ())
    spec = await parse_body(request, specs.AgentReport)
    return respond(await context.write(context.store.report_agent, spec))


async def delete_agent(request: web.Request) -> web.StreamResponse:
    """DELETE /v1/agents/{id}: forget the agent; its networks and routers go to others."""
    context = request.app[CONTEXT]
    check_query(request, ())
    await context.write(context.store.delete_agent, request.match_info["id"])
    return web.Response(status=204)


AGENT_ROUTES = (
    Route(
        "GET",
        "/v1/agents",
        list_agents,
        "list_agents",
        "List agents (network nodes), alive or not, with their networks and routers",
        "agents",
        response=AgentList,
        query=(HOST,),
        errors=(400,),
    ),
    Route(
        "POST",
        "/v1/agents",
        set_agent_state,
        "set_agent_state",
        "Register an agent or report that it is alive (by host)",
        "agents",
        body=specs.AgentReport,
        response=views.AgentView,
        errors=(400, 413),
    ),
    Route(
        "GET",
        "/v1/agents/{id}",
        get_agent,
        "get_agent",
        "Show an agent",
        "agents",
        response=views.AgentView,
        errors=(404,),
    ),
    Route(
        "DELETE",
        "/v1/agents/{id}",
        delete_agent,
        "delete_agent",
        "Delete an agent (what it served is scheduled to others)",
        "agents",
        status=204,
        errors=(404,),
    ),
)


async def monitor_agents(context: Context) -> None:
    """Every agent_down_time / 2 seconds, the store's scheduling pass (neutron's periodic
    dead-agent check). The first waits agent_down_time after start, so agents that were
    reporting while this process was down are not judged dead before they can report."""
    down_time = context.store.scheduling.agent_down_time
    await asyncio.sleep(down_time)
    while True:
        try:
            changed = await context.write(context.store.reschedule)
        except MetastackError as exc:
            log.warning("agent scheduling: %s", exc)
        else:
            if changed:
                log.info("agent scheduling: %d bindings changed", changed)
        await asyncio.sleep(down_time / 2)
