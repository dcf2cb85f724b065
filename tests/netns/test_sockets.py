"""listen_in_netns: the socket lands in the namespace, the thread comes back."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterator

import pytest

from metastack.lab import Lab
from metastack.netns.exec import NetnsError
from metastack.netns.sockets import listen_in_netns

pytestmark = pytest.mark.netns


def own_netns() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.fixture
def two_namespaces() -> Iterator[list[str]]:
    with Lab(secrets.token_hex(3)) as lab:
        names = [lab.namespace("s"), lab.namespace("s")]
        lab.apply()
        yield names


def test_same_address_in_two_namespaces(two_namespaces: list[str]) -> None:
    before = own_netns()
    socks = [listen_in_netns(name, "169.254.169.254", 80) for name in two_namespaces]
    try:
        assert own_netns() == before
        for sock in socks:
            assert sock.getsockname() == ("169.254.169.254", 80)
            assert sock.getblocking() is False
        v6 = listen_in_netns(two_namespaces[0], "::", 9697)
        assert v6.family == socket.AF_INET6
        v6.close()
    finally:
        for sock in socks:
            sock.close()


def test_failures_leave_the_thread_home(two_namespaces: list[str]) -> None:
    before = own_netns()
    with pytest.raises(NetnsError):
        listen_in_netns("ms-none-such", "169.254.169.254", 80)
    first = listen_in_netns(two_namespaces[0], "169.254.169.254", 80)
    try:
        with pytest.raises(NetnsError, match="in ms-"):
            listen_in_netns(two_namespaces[0], "169.254.169.254", 80)  # address in use
    finally:
        first.close()
    assert own_netns() == before
    seen: list[int] = []
    thread = threading.Thread(target=lambda: seen.append(own_netns()))
    thread.start()
    thread.join()
    assert seen == [before]
