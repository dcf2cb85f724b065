"""sd_notify datagrams: the path and abstract socket forms, the watchdog, a clean environment."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from metastack.notify import Notifier


def test_datagrams_reach_a_path_socket_and_the_environment_is_cleaned(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(str(path))
        env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "3000000", "OTHER": "x"}
        notifier = Notifier.from_environ(env)
        assert env == {"OTHER": "x"}  # children must not speak for the service
        assert notifier.watchdog_interval == 1.5
        assert notifier.send("READY=1") and notifier.send("STOPPING=1")
        assert receiver.recv(100) == b"READY=1"
        assert receiver.recv(100) == b"STOPPING=1"
        notifier.close()


def test_abstract_socket(tmp_path: Path) -> None:
    name = f"metastack-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind("\0" + name)
        notifier = Notifier.from_environ({"NOTIFY_SOCKET": "@" + name})
        assert notifier.send("WATCHDOG=1")
        assert receiver.recv(100) == b"WATCHDOG=1"
        notifier.close()


def test_without_systemd_nothing_is_sent() -> None:
    notifier = Notifier.from_environ({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert not notifier.send("READY=1")


def test_a_watchdog_of_another_process_is_not_ours(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "n"), "WATCHDOG_USEC": "1000", "WATCHDOG_PID": "1"}
    assert Notifier.from_environ(env).watchdog_interval is None
    env = {"NOTIFY_SOCKET": str(tmp_path / "n"), "WATCHDOG_USEC": "1000"}
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier.from_environ(env).watchdog_interval == 0.0005


def test_a_missing_socket_is_a_warning_not_a_crash(tmp_path: Path) -> None:
    notifier = Notifier(str(tmp_path / "absent"))
    assert not notifier.send("READY=1")
    notifier.close()
