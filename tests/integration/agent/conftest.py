"""Fixtures: a real agent on a tmp_path unix socket between a fake control API and fake APIs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from integration.agent.agent_fakes import SECRET, FakeControl, FakeMetadata, serving, wait_until
from metastack.agent.config import AgentConfig
from metastack.agent.server import RunningAgent, running


@pytest.fixture
async def control() -> AsyncIterator[FakeControl]:
    fake = FakeControl()
    fake.add_port("p1", "net-a", "10.0.0.5", "inst-a", project_id="proj-a")
    fake.add_port("p2", "net-b", "10.0.0.5", "inst-b", project_id="proj-b")
    fake.add_port("p3", "net-c", "10.0.1.7", "inst-c", project_id="proj-c", mac="fa:16:3e:12:34:56")
    fake.add_port("p4", "net-a", "10.0.0.9", "", project_id="proj-a")  # unbound port
    fake.add_router("router-1", ["net-a", "net-c"])
    async with serving(fake.app()) as port:
        fake.url = f"http://127.0.0.1:{port}"
        yield fake


@pytest.fixture
async def metadata() -> AsyncIterator[FakeMetadata]:
    fake = FakeMetadata(SECRET)
    async with serving(fake.app()) as port:
        fake.url = f"http://127.0.0.1:{port}"
        yield fake


@pytest.fixture
def make_config(
    tmp_path: Path, control: FakeControl, metadata: FakeMetadata
) -> Callable[..., AgentConfig]:
    def build(**overrides: Any) -> AgentConfig:
        values: dict[str, Any] = {
            "metadata_proxy_socket": str(tmp_path / "run" / "agent.sock"),
            "metadata_proxy_shared_secret": SECRET,
            "metadata_endpoints": [metadata.url],
            "control_url": control.url,
            "upstream_timeout": 2.0,
            "upstream_connect_timeout": 0.5,
            "feed_wait": 2,
            # Lookup counts in these tests are exact; prefetching has tests of its own.
            "prefetch_ports": "off",
        }
        values.update(overrides)
        return AgentConfig.model_validate(values)

    return build


@pytest.fixture
async def agent(make_config: Callable[..., AgentConfig]) -> AsyncIterator[RunningAgent]:
    async with running(make_config()) as started:
        await wait_until(lambda: started.cache.live)
        yield started


@pytest.fixture
async def client(agent: RunningAgent) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        connector=aiohttp.UnixConnector(path=agent.path), base_url="http://metadata"
    ) as session:
        yield session
