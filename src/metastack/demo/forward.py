"""The multi-node demo's door to its control API from the host: a loopback TCP relay.

The demo binds 127.0.0.1:PORT in the host's namespace, then starts this process inside
the lab's fabric namespace (`nsenter --net`) with that listening socket. Each connection
accepted on the host's loopback is relayed, bytes only, to the first API node that
answers on the management network. Nothing is routed, bridged or NATed between the host
and the lab: no other host address can reach the lab, and the lab cannot reach the host.

    python -m metastack.demo.forward --fd N --to 10.255.0.11:8774 [--to ...] --name MARKER
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Sequence

log = logging.getLogger("metastack.demo.forward")
CONNECT_TIMEOUT = 1.0
CHUNK = 65536


def _target(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()  # a client that half-closes still gets its answer
    except (ConnectionError, OSError):
        writer.close()


async def _connect(
    targets: Sequence[tuple[str, int]],
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    for host, port in targets:
        try:
            return await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            reason = str(exc) or f"no connection within {CONNECT_TIMEOUT} s"
            log.warning("API node %s:%d: %s; trying the next", host, port, reason)
    return None


async def relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    targets: Sequence[tuple[str, int]],
) -> None:
    """Relay one accepted connection to the first target that accepts one."""
    upstream = await _connect(targets)
    if upstream is None:
        client_writer.close()
        return
    reader, writer = upstream
    try:
        await asyncio.gather(_pipe(client_reader, writer), _pipe(reader, client_writer))
    finally:
        for each in (writer, client_writer):
            each.close()
            with contextlib.suppress(ConnectionError, OSError):
                await each.wait_closed()


async def serve(sock: socket.socket, targets: Sequence[tuple[str, int]]) -> None:
    """Accept on `sock` until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await asyncio.start_server(lambda r, w: relay(r, w, targets), sock=sock)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the arguments and relay until stopped."""
    parser = argparse.ArgumentParser(prog="python -m metastack.demo.forward")
    parser.add_argument("--fd", type=int, required=True, help="the listening socket")
    parser.add_argument("--to", action="append", type=_target, required=True)
    parser.add_argument("--name", default="", help="a marker for the demo (its workdir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sock = socket.socket(fileno=args.fd)
    sock.setblocking(False)
    asyncio.run(serve(sock, args.to))


if __name__ == "__main__":
    main()
