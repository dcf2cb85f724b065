"""The proxy's client of the agent's unix socket: the shared pooled HTTP/1.1 client."""

from __future__ import annotations

from metastack.http11 import ClientResponse, Endpoint, Pool, UpstreamBroken, UpstreamTimeout

__all__ = ["AgentClient", "UpstreamBroken", "UpstreamResponse", "UpstreamTimeout"]

UpstreamResponse = ClientResponse


class AgentClient(Pool):
    """Sends requests to the agent over its unix socket, reusing idle connections."""

    def __init__(
        self, path: str, *, connect_timeout: float, pool_size: int, concurrency: int = 0
    ) -> None:
        super().__init__(
            Endpoint.unix(path),
            connect_timeout=connect_timeout,
            pool_size=pool_size,
            concurrency=concurrency,
            # neutron's own agent, kept behind our proxy, ends its error answers' lines in LF.
            lenient_responses=True,
        )
        self.path = path
