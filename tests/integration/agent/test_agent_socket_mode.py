"""The agent's socket under neutron's `deduce` (the default): who may connect to it."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from metastack.agent.config import AgentConfig
from metastack.agent.server import running


@pytest.fixture
def open_folder() -> Iterator[Path]:
    """A folder other users may traverse (pytest's tmp_path is the owner's only)."""
    folder = Path(tempfile.mkdtemp(prefix="ms-sockmode-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        for entry in folder.iterdir():
            entry.unlink()
        folder.rmdir()


def connects_as(user: str, path: str) -> bool:
    """Whether a process running as `user` may connect to the unix socket at `path`."""
    entry = pwd.getpwnam(user)
    pid = os.fork()
    if pid == 0:  # the child: drop to the user, try, report by exit status
        code = 2
        try:
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(path)
            code = 0
        except PermissionError:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) in (0, 1), "the child failed otherwise"
    return os.waitstatus_to_exitcode(status) == 0


async def test_deduce_lets_in_the_proxies_user_only_when_named(
    make_config: Callable[..., AgentConfig], open_folder: Path
) -> None:
    socket_path = str(open_folder / "agent.sock")
    # No metadata_proxy_user: the proxies run as the agent does, owner only.
    async with running(make_config(metadata_proxy_socket=socket_path)) as started:
        assert stat.S_IMODE(os.stat(started.path).st_mode) == 0o644
        assert connects_as(pwd.getpwuid(os.geteuid()).pw_name, started.path)
        if os.geteuid() == 0:
            assert not connects_as("nobody", started.path)
        await asyncio.sleep(0.2)  # let the server accept and close what connected
    # Proxies (haproxy) that drop to nobody: neither our user nor our group, so all (0666).
    named = make_config(
        metadata_proxy_socket=socket_path,
        metadata_proxy_user="nobody",
        metadata_proxy_group="nogroup",
    )
    async with running(named) as started:
        assert stat.S_IMODE(os.stat(started.path).st_mode) == 0o666
        if os.geteuid() == 0:
            assert connects_as("nobody", started.path)
        await asyncio.sleep(0.2)
