"""A stand-in for neutron's own metadata agent (2025.1 on), for operators who keep it.

Served as neutron serves it: a socketserver unix server listening with Python's default
backlog of 5 (neutron sets its `metadata_backlog` after listen()), a thread per
connection, each request read with one `recv(4096)`, one answer written, the connection
closed. Answers are framed byte for byte as neutron writes them
(`neutron/common/metadata.py`; docs/wire-contracts.md#agent-socket):

- an address no port holds: the jinja2 error page, whose lines end in a bare LF, with
  `Connection: close` and a Content-Length from `RESPONSE_LENGTH` arithmetic;
- a relayed 200: the request's HTTP version, a space and webob's `str(Response)` (CRLF
  lines, no Connection header), plus two extra CRLFs when the body is empty.

Instead of asking nova, it answers from a table: the instance id for
`/latest/meta-data/instance-id`, an empty 200 for paths ending in `/empty`, and a small
JSON document naming the instance and the path for anything else.
"""

from __future__ import annotations

import contextlib
import json
import os
import socketserver
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

RESPONSE_LENGTH = 95  # neutron's constant: the error page's length without its three fields
INSTANCE_ID_PATH = "/latest/meta-data/instance-id"


def error_answer(title: str, message: str) -> bytes:
    """neutron's `encode_http_reponse(title, title, message)`: status in the title's place."""
    length = RESPONSE_LENGTH + len(title) * 2 + len(message)
    return (
        f"HTTP/1.1 {title}\nContent-Type: text/plain; charset=UTF-8\nConnection: close\n"
        f"Content-Length: {length}\n\n<html>\n <head>\n  <title>{title}</title>\n </head>\n"
        f" <body>\n  <h1>{title}</h1>\n  {message}<br /><br />\n\n\n </body>\n</html>"
    ).encode()


def relayed_answer(version: str, content_type: str, body: bytes) -> bytes:
    """neutron's `_http_response` of a 200 from nova."""
    head = f"{version} 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}"
    # webob joins status, headers and (when there is one) an empty line and the body with
    # CRLF; an empty body leaves the head unended, and neutron adds the two CRLFs itself.
    # Either way the bytes are the head, an empty line and the body.
    return head.encode() + b"\r\n\r\n" + body


def not_found(scope: str, ident: str) -> bytes:
    """The 404 for an address without a port (`scope` "network" or "router")."""
    return error_answer("404 Not Found", f"Instance was not found on {scope} {ident}.")


@dataclass
class Seen:
    """What the agent received: each single read, and how many were not a whole request."""

    reads: list[bytes] = field(default_factory=list)
    incomplete: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _whole(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


class NeutronAgent:
    """The agent on `path`; `ports` maps (network or router id, IP address) to an instance."""

    def __init__(
        self, path: str, ports: Mapping[tuple[str, str], str], *, delay: float = 0.0
    ) -> None:
        self.path = path
        self.ports = dict(ports)
        self.delay = delay  # the RPC lookup and the call to nova, in seconds
        self.seen = Seen()

    def answer(self, data: bytes) -> bytes:
        """The bytes neutron's handler writes for one request read in one recv()."""
        with self.seen.lock:
            self.seen.reads.append(data)
            if not _whole(data):
                self.seen.incomplete += 1
        lines = data.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
        method_target_version = lines[0].split(" ")
        target, version = method_target_version[1], method_target_version[2]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), value.strip())
        address = headers.get("x-forwarded-for", "")
        network = headers.get("x-neutron-network-id")
        router = headers.get("x-neutron-router-id")
        if self.delay:
            time.sleep(self.delay)
        if network and router:
            message = f"Both network {network} and router {router} defined."
            return error_answer("400 Bad Request", message)
        scope, ident = ("network", network) if network else ("router", router or "None")
        instance = self.ports.get((ident, address))
        if instance is None:
            return not_found(scope, ident)
        path = target.partition("?")[0]
        if path == INSTANCE_ID_PATH:
            return relayed_answer(version, "text/plain; charset=UTF-8", instance.encode())
        if path.endswith("/empty"):
            return relayed_answer(version, "text/plain; charset=UTF-8", b"")
        document = json.dumps({"uuid": instance, "path": path}).encode()
        return relayed_answer(version, "application/json", document)

    @contextlib.contextmanager
    def running(self) -> Iterator[NeutronAgent]:
        """Serve on `path` (mode 0666) in a thread; stopped and removed afterwards."""
        agent = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data = self.request.recv(4096)
                if data:
                    self.request.sendall(agent.answer(data))

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True
            request_queue_size = 5

        server = Server(self.path, Handler)
        os.chmod(self.path, 0o666)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def main() -> int:
    """`python neutron_agent.py PATH PORTS_JSON [DELAY]`: serve until SIGTERM or SIGINT.

    PORTS_JSON is a list of [network or router id, address, instance id].
    """
    import signal
    import sys

    path, table = sys.argv[1], json.loads(sys.argv[2])
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    ports = {(scope, address): instance for scope, address, instance in table}
    with NeutronAgent(path, ports, delay=delay).running():
        print("ready", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
