"""`metastack demo` driven through its CLI, and what a test checks around it."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

METASTACK = str(Path(sys.executable).with_name("metastack"))
URL = "http://169.254.169.254/latest/meta-data/instance-id"


def demo(
    *args: str, workdir: Path, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run `metastack demo ARGS --workdir WORKDIR`; fails the test when it fails (`check`)."""
    result = subprocess.run(
        [METASTACK, "demo", *args, "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def searchable_tmp(prefix: str = "ms-demo-") -> Path:
    """A fresh folder others may traverse: dnsmasq runs as nobody and reads files below it."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    return folder


def netns_list() -> list[str]:
    """Names of the network namespaces, as `ip netns list` shows them."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def assert_nothing_left(prefix: str, workdir: Path) -> None:
    """No namespace with the run's prefix, no process naming its folder, no folder."""
    assert [n for n in netns_list() if n.startswith(prefix)] == []
    assert not workdir.exists()
    assert processes_mentioning(str(workdir)) == []
    assert not any(p.name.startswith(prefix) for p in Path("/etc/netns").glob("*"))


def curl(namespace: str, url: str = URL, timeout: float = 3) -> tuple[str, str]:
    """(HTTP status, body) of a GET from inside a namespace; status `000` when none came."""
    out = subprocess.run(
        ["ip", "netns", "exec", namespace, "curl", "-s", "-m", str(timeout),
         "-w", "\n%{http_code}", url],
        capture_output=True,
        text=True,
    ).stdout  # fmt: skip
    body, _, code = out.rpartition("\n")
    return code, body
