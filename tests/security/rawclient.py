"""Raw-bytes HTTP client for the security tier: run inside a guest namespace, or imported.

Run as `python rawclient.py MODE` with a JSON job on stdin; prints one JSON document.
Only the standard library, so any interpreter in any namespace can run it. Modes:

- `exchange`: send each case's bytes (in parts, with gaps; then, with `half_close`, shut
  the sending side down), collect what comes back until the server closes, goes quiet
  after answering, or `hang_limit` passes.
- `hold`: open many connections and send nothing; report when the server closed them.
- `slowloris`: many connections trickling a request head one byte at a time.
- `probe`: sequential GETs on fresh connections for a while; status and latency of each.
"""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import selectors
import socket
import sys
import time
from typing import Any

Job = dict[str, Any]


def _raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, wanted), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _open(job: Job) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    if job.get("unix"):
        return await asyncio.open_unix_connection(job["unix"], limit=1 << 20)
    local = (job["bind"], 0) if job.get("bind") else None
    return await asyncio.open_connection(job["host"], job["port"], limit=1 << 20, local_addr=local)


class _Collect(asyncio.Protocol):
    """Keeps every byte received, also those that arrived before a reset."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.more = asyncio.Event()
        self.closed = False
        self.error = ""

    def data_received(self, data: bytes) -> None:
        self.data += data
        self.more.set()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.error = repr(exc) if exc else ""
        self.more.set()


async def _connect(job: Job) -> tuple[asyncio.Transport, _Collect]:
    loop = asyncio.get_running_loop()
    if job.get("unix"):
        transport, proto = await loop.create_unix_connection(_Collect, job["unix"])
    else:
        local = (job["bind"], 0) if job.get("bind") else None
        transport, proto = await loop.create_connection(
            _Collect, job["host"], job["port"], local_addr=local
        )
    assert isinstance(proto, _Collect)
    return transport, proto


async def _one(job: Job, case: Job) -> Job:
    started = time.monotonic()
    hang_limit = float(job.get("hang_limit", 10.0))
    idle = float(job.get("idle", 0.3))
    first_byte: float | None = None
    try:
        transport, proto = await asyncio.wait_for(_connect(job), 5.0)
    except (OSError, TimeoutError) as exc:
        return {"id": case["id"], "received": "", "closed": True, "first_byte": None,
                "seconds": time.monotonic() - started, "error": f"connect: {exc!r}"}  # fmt: skip
    try:
        for index, part in enumerate(case["parts"]):
            if index and case.get("gap"):
                await asyncio.sleep(float(case["gap"]))
            if proto.closed:
                break
            transport.write(base64.b64decode(part))
        if case.get("half_close") and not proto.closed:
            transport.write_eof()  # shutdown(SHUT_WR), as `printf ... | nc` does
        while not proto.closed and len(proto.data) < 4 << 20:
            # Before the first byte: wait up to the hang limit; afterwards: until quiet.
            wait = hang_limit - (time.monotonic() - started) if first_byte is None else idle
            if wait <= 0:
                break
            proto.more.clear()
            try:
                await asyncio.wait_for(proto.more.wait(), wait)
            except TimeoutError:
                break
            if proto.data and first_byte is None:
                first_byte = time.monotonic() - started
    finally:
        closed, error = proto.closed, proto.error  # before our own abort closes it
        transport.abort()
    if proto.data and first_byte is None:
        first_byte = time.monotonic() - started
    return {
        "id": case["id"],
        "received": base64.b64encode(bytes(proto.data)).decode(),
        "closed": closed,
        "first_byte": first_byte,
        "seconds": time.monotonic() - started,
        "error": error,
    }


async def exchange(job: Job) -> list[Job]:
    """Every case on its own connection, `concurrency` at a time; results in case order."""
    limit = asyncio.Semaphore(int(job.get("concurrency", 32)))

    async def bounded(case: Job) -> Job:
        async with limit:
            return await _one(job, case)

    return list(await asyncio.gather(*(bounded(case) for case in job["cases"])))


def hold(job: Job) -> Job:
    """Open `count` idle connections, keep them `seconds`; when did the server close them?"""
    count, seconds = int(job["count"]), float(job["seconds"])
    _raise_nofile(count + 256)
    selector = selectors.DefaultSelector()
    opened: list[socket.socket] = []
    failures: list[str] = []
    started = time.monotonic()
    for _ in range(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        code = sock.connect_ex((job["host"], int(job["port"])))
        if code not in (0, 115):  # EINPROGRESS
            failures.append(str(code))
            sock.close()
            continue
        opened.append(sock)
        selector.register(sock, selectors.EVENT_READ)
    connected_in = time.monotonic() - started
    closed_at: list[float] = []
    deadline = started + seconds
    while selector.get_map() and (left := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(min(left, 0.2)):
            conn = key.fileobj
            assert isinstance(conn, socket.socket)
            try:
                data = conn.recv(4096)
            except OSError:
                data = b""
            if not data or b"\r\n\r\n" in data:
                selector.unregister(conn)
                closed_at.append(time.monotonic() - started)
    still_open = len(selector.get_map())
    for sock in opened:
        sock.close()
    return {
        "opened": len(opened),
        "failures": failures[:10],
        "connected_in": connected_in,
        "closed_at": sorted(closed_at),
        "still_open": still_open,
    }


async def _trickle(job: Job, head: bytes, gap: float, limit: float) -> Job:
    started = time.monotonic()
    reader, writer = await asyncio.wait_for(_open(job), 5.0)
    sent = 0
    received = b""
    try:
        for byte in head:
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1
            try:
                received = await asyncio.wait_for(reader.read(4096), gap)
            except TimeoutError:
                continue
            break  # an answer or the end of the connection
        else:
            received = await asyncio.wait_for(reader.read(4096), limit)
    except (ConnectionError, OSError, TimeoutError):
        pass
    finally:
        writer.transport.abort()
    return {
        "sent": sent,
        "received": received.decode("latin-1"),
        "seconds": time.monotonic() - started,
    }


async def slowloris(job: Job) -> list[Job]:
    """`count` connections each sending `head` one byte every `gap` seconds."""
    _raise_nofile(int(job["count"]) + 256)
    head = job["head"].encode("latin-1")
    gap, limit = float(job["gap"]), float(job["limit"])
    return list(
        await asyncio.gather(*(_trickle(job, head, gap, limit) for _ in range(int(job["count"]))))
    )


def probe(job: Job) -> Job:
    """GET `path` on a fresh connection each time for `seconds` (at most `count` times).

    Each result: status (-1 on a connection error), seconds taken, when it started
    (CLOCK_MONOTONIC, comparable across processes) and, with `capture`, the body.
    """
    request = (
        f"GET {job['path']} HTTP/1.1\r\nHost: {job['host']}\r\nConnection: close\r\n\r\n"
    ).encode()
    until = time.monotonic() + float(job["seconds"])
    results: list[Job] = []
    while time.monotonic() < until and len(results) < int(job.get("count", 100000)):
        started = time.monotonic()
        status, body = -1, b""
        try:
            with socket.create_connection((job["host"], int(job["port"])), timeout=5) as sock:
                sock.sendall(request)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else -2
        except (OSError, ValueError, IndexError):
            status = -1
        result: Job = {"status": status, "seconds": time.monotonic() - started, "at": started}
        if job.get("capture"):
            result["body"] = body.decode("utf-8", "replace")
        results.append(result)
        if job.get("pause"):
            time.sleep(float(job["pause"]))
    return {"results": results}


def main() -> int:
    """Read the job, run the mode, print the result as JSON."""
    mode = sys.argv[1]
    job = json.load(sys.stdin)
    if mode == "exchange":
        result: Any = asyncio.run(exchange(job))
    elif mode == "hold":
        result = hold(job)
    elif mode == "slowloris":
        result = asyncio.run(slowloris(job))
    elif mode == "probe":
        result = probe(job)
    else:
        raise SystemExit(f"unknown mode {mode}")
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
