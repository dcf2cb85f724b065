"""The netagent is ready after a good pass only; every pass is timed, failures counted."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from metastack.client.http import ControlApiError
from metastack.metrics import NetagentMetrics, new_registry, render
from metastack.netagent.reconcile import Report
from metastack.netagent.service import NetagentService
from unit.netagent.builders import config


class FlakyControl:
    """Lists nothing, or fails every call while `down`."""

    def __init__(self) -> None:
        self.down = False

    async def list(self, plural: str, **_: Any) -> list[Any]:
        if self.down:
            raise ControlApiError(0, "control API down")
        return [{"host": "node1", "networks": [], "routers": []}] if plural == "agents" else []

    async def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.down:
            raise ControlApiError(0, "control API down")
        return {"id": "agent", **body}  # the state report

    async def close(self) -> None:
        return None


def counts(registry: Any) -> dict[str, float]:
    found = {}
    for family in text_string_to_metric_families(render(registry).decode()):
        for sample in family.samples:
            if not sample.labels:
                found[sample.name] = sample.value
    return found


async def test_ready_follows_the_last_pass(tmp_path: Any) -> None:
    registry = new_registry(process=False)
    service = NetagentService(config(state_path=str(tmp_path)), NetagentMetrics(registry))
    control = FlakyControl()
    agent = service.agent
    agent.client = control  # type: ignore[assignment]
    agent.reconciler.apply = lambda desired, full: Report()  # type: ignore[method-assign]
    assert not await service.ready()  # no pass yet

    await agent.reconcile(full=True)
    assert await service.ready()

    control.down = True
    agent._topology = None
    with pytest.raises(ControlApiError):
        await agent.reconcile(full=True)
    assert not await service.ready()

    control.down = False
    agent.reconciler.apply = lambda desired, full: Report(errors=["dnsmasq failed"])  # type: ignore[method-assign]
    await agent.reconcile(full=True)
    assert not await service.ready()  # a step in error is no good pass

    agent.reconciler.apply = lambda desired, full: Report()  # type: ignore[method-assign]
    await agent.reconcile(full=True)
    assert await service.ready()
    found = counts(registry)
    assert found["metastack_netagent_reconcile_seconds_count"] == 4
    assert found["metastack_netagent_reconcile_failures_total"] == 2
