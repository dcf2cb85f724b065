"""unix_socket_accepts: the readiness probe of services on unix sockets."""

from __future__ import annotations

import socket
from pathlib import Path

from metastack.netns.sockets import unix_socket_accepts


def test_accepts_only_a_listening_socket(tmp_path: Path) -> None:
    path = tmp_path / "service.sock"
    assert not unix_socket_accepts(path)  # nothing there
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        assert not unix_socket_accepts(path)  # bound, not listening yet
        sock.listen(1)
        assert unix_socket_accepts(str(path))
    finally:
        sock.close()
    assert not unix_socket_accepts(path)  # the service is gone, its file stays
