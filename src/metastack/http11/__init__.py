"""Lean HTTP/1.1 on asyncio and httptools: the server protocol and the pooled client."""

from metastack.http11.client import (
    BODY_METHODS,
    ClientResponse,
    ConnectFailed,
    NotSent,
    Pool,
    UpstreamBroken,
    UpstreamTimeout,
    encode_request,
)
from metastack.http11.endpoint import Endpoint
from metastack.http11.message import (
    HOP_BY_HOP,
    REASONS,
    Handler,
    Headers,
    Limits,
    Request,
    Response,
    error_response,
    reason,
)
from metastack.http11.server import HttpProtocol, HttpServer, drain, encode_response

__all__ = [
    "BODY_METHODS",
    "HOP_BY_HOP",
    "REASONS",
    "ClientResponse",
    "ConnectFailed",
    "Endpoint",
    "Handler",
    "Headers",
    "HttpProtocol",
    "HttpServer",
    "Limits",
    "NotSent",
    "Pool",
    "Request",
    "Response",
    "UpstreamBroken",
    "UpstreamTimeout",
    "drain",
    "encode_request",
    "encode_response",
    "error_response",
    "reason",
]
