"""The netagent reports its state (host, capabilities) before its first read, then every
report_interval, whatever a failed report says."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from metastack.client.http import ControlApiError
from metastack.netagent.reconcile import Report
from metastack.netagent.service import NetAgent
from metastack.netagent.topology import UnknownAgent
from unit.netagent.builders import config


class ReportingControl:
    """Records the order of calls; knows the agent once it reported (unless `forgetful`);
    a state report fails while `failing` is set."""

    def __init__(self, *, forgetful: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.failing = False
        self.forgetful = forgetful
        self.agents: list[dict[str, Any]] = []

    async def list(self, plural: str, **filters: Any) -> list[Any]:
        self.calls.append(("list", plural))
        return self.agents if plural == "agents" else []

    async def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("create", (plural, body)))
        if self.failing:
            raise ControlApiError(503, "database unavailable")
        agent = {"id": "a1", "networks": [], "routers": [], **body}
        if not self.forgetful:
            self.agents = [agent]
        return agent

    def reports(self) -> list[dict[str, Any]]:
        return [arg[1] for kind, arg in self.calls if kind == "create" and arg[0] == "agents"]


async def test_first_pass_reports_before_reading(tmp_path: Any) -> None:
    control = ReportingControl()
    netagent = NetAgent(config(state_path=str(tmp_path)), control)  # type: ignore[arg-type]
    netagent.reconciler.apply = lambda desired, full: Report()  # type: ignore[method-assign]
    await netagent.reconcile(full=True)
    assert control.calls[0] == (
        "create",
        ("agents", {"host": "node1", "capabilities": ["dhcp", "l3", "metadata"]}),
    )
    assert ("list", "agents") in control.calls[1:]
    await netagent.reconcile(full=True)
    assert len(control.reports()) == 1  # later passes leave reporting to the report loop


async def test_a_static_list_takes_the_node_out_of_that_scheduling(tmp_path: Any) -> None:
    control = ReportingControl()
    netagent = NetAgent(
        config(state_path=str(tmp_path), routers=["r1"], capabilities=["dhcp", "l3"]),
        control,  # type: ignore[arg-type]
    )
    await netagent.report_state()
    assert control.reports() == [{"host": "node1", "capabilities": ["dhcp"]}]


async def test_reports_every_interval_and_outlives_failures(tmp_path: Any) -> None:
    control = ReportingControl()
    netagent = NetAgent(
        config(state_path=str(tmp_path), report_interval=0.02),
        control,  # type: ignore[arg-type]
    )
    loop = asyncio.create_task(netagent._report_loop())
    try:
        control.failing = True
        await asyncio.sleep(0.15)
        failed = len(control.reports())
        assert failed >= 3
        control.failing = False
        await asyncio.sleep(0.1)
        assert len(control.reports()) >= failed + 2
    finally:
        loop.cancel()


async def test_a_host_the_control_api_does_not_know_registers_again(tmp_path: Any) -> None:
    control = ReportingControl(forgetful=True)  # an agent record deleted at once
    netagent = NetAgent(config(state_path=str(tmp_path)), control)  # type: ignore[arg-type]
    applied: list[Any] = []

    def apply(desired: Any, full: bool) -> Report:
        applied.append(desired)
        return Report()

    netagent.reconciler.apply = apply  # type: ignore[method-assign]
    with pytest.raises(UnknownAgent):
        await netagent.reconcile(full=True)
    assert applied == []  # nothing torn down for want of a record
    with pytest.raises(UnknownAgent):
        await netagent.reconcile(full=True)
    assert len(control.reports()) == 2  # each pass reported the host again first
