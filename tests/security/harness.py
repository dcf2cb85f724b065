"""Running raw clients in guests, reading their answers, and the checks every attack ends with."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from e2e.world import METADATA, World, curl
from metastack.lab.guest import GUEST_PYTHON
from support.needs import missing

# The proxy's guest-side head deadline in this tier (the default is 10 s).
HEADER_TIMEOUT = 3.0
RAWCLIENT = Path(__file__).with_name("rawclient.py")
MD = "/openstack/latest/meta_data.json"
METADATA_HOST = "169.254.169.254"


def why_not() -> str | None:
    return missing("the security tier", ("ip", "curl"))


class ClientRun:
    """`rawclient.py MODE` started inside a guest namespace; `result()` waits for its JSON."""

    def __init__(self, netns: str | None, mode: str, job: dict[str, Any]) -> None:
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.proc = subprocess.Popen(
            [*prefix, GUEST_PYTHON, str(RAWCLIENT), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(job))
        self.proc.stdin.close()
        self.proc.stdin = None

    def result(self, timeout: float = 120.0) -> Any:
        """The client's JSON answer; the client is killed (by its PID) if it overruns."""
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise
        assert self.proc.returncode == 0, f"rawclient exit {self.proc.returncode}: {err[-3000:]}"
        return json.loads(out)


def run_client(netns: str | None, mode: str, job: dict[str, Any], timeout: float = 120.0) -> Any:
    """Run one raw client to completion (netns None: in this namespace, e.g. unix sockets)."""
    return ClientRun(netns, mode, job).result(timeout)


@dataclass(frozen=True)
class Answer:
    """One parsed HTTP response."""

    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


@dataclass(frozen=True)
class Outcome:
    """What one raw exchange got back."""

    case: str
    raw: bytes
    answers: list[Answer]
    closed: bool
    first_byte: float | None
    seconds: float
    error: str
    leftover: bytes = b""

    @property
    def statuses(self) -> list[int]:
        return [answer.status for answer in self.answers]

    def describe(self) -> str:
        return (
            f"{self.case}: statuses {self.statuses} closed={self.closed} "
            f"first_byte={self.first_byte} seconds={self.seconds:.2f} {self.error} "
            f"raw={self.raw[:300]!r}"
        )


def parse_answers(raw: bytes) -> tuple[list[Answer], bytes]:
    """HTTP/1.1 responses framed by Content-Length, in order; and any bytes that are not."""
    answers: list[Answer] = []
    rest = raw
    while rest:
        head, sep, after = rest.partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"HTTP/1."):
            break
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        try:
            status = int(parts[1])
        except (IndexError, ValueError):
            break
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.setdefault(name.strip().lower().decode("latin-1"), []).append(
                value.strip().decode("latin-1")
            )
        length = int(headers.get("content-length", ["0"])[0])
        answers.append(Answer(status, headers, after[:length]))
        rest = after[length:]
    return answers, rest


def exchange(
    cases: Sequence[tuple[str, Sequence[bytes]]],
    *,
    netns: str | None = None,
    unix: str | None = None,
    host: str = METADATA_HOST,
    port: int = 80,
    bind: str | None = None,
    gap: float = 0.0,
    hang_limit: float = HEADER_TIMEOUT + 2.0,
    concurrency: int = 32,
    half_close: bool = False,
) -> list[Outcome]:
    """Send each case (id, byte parts) on its own connection from `netns` (or to `unix`),
    from source address `bind` if given; with `half_close`, each client shuts its sending
    side down after its last part."""
    job: dict[str, Any] = {
        "host": host,
        "port": port,
        "unix": unix,
        "bind": bind,
        "hang_limit": hang_limit,
        "concurrency": concurrency,
        "cases": [
            {
                "id": case,
                "parts": [base64.b64encode(p).decode() for p in parts],
                "gap": gap,
                "half_close": half_close,
            }
            for case, parts in cases
        ],
    }
    results = run_client(netns, "exchange", job)
    outcomes = []
    for result in results:
        raw = base64.b64decode(result["received"])
        answers, leftover = parse_answers(raw)
        outcomes.append(
            Outcome(
                result["id"],
                raw,
                answers,
                result["closed"],
                result["first_byte"],
                result["seconds"],
                result["error"],
                leftover,
            )
        )
    return outcomes


def secrets_of_others(world: World, key: str | None) -> dict[str, bytes]:
    """Every byte string that would identify an instance other than guest `key`'s."""
    own = world.guests[key] if key else None
    found: dict[str, bytes] = {}
    for other in world.guests.values():
        if other.instance is None or other is own:
            continue
        found[f"{other.key} uuid"] = other.uuid.encode()
        found[f"{other.key} hostname"] = other.hostname.encode()
        found[f"{other.key} user data"] = f"# for {other.key}".encode()
        found[f"{other.key} public key"] = other.public_key.split()[1].encode()
        if own is None or other.project_id != own.project_id:
            found[f"{other.key} project"] = other.project_id.encode()
    return found


def leaks(raw: bytes, secrets: dict[str, bytes]) -> list[str]:
    """Which secrets appear anywhere in `raw` (also in other letter cases)."""
    lowered = raw.lower()
    return [what for what, value in secrets.items() if value.lower() in lowered]


def revision(world: World) -> int:
    """The store's revision, read through the control API's change feed."""
    return int(world.chain.call("GET", "/v1/changes?since=0&limit=1")["revision"])


def unix_sockets(pid: int) -> dict[str, tuple[str, str]]:
    """Unix sockets of a process's namespace: fd link name -> (flags, bound path)."""
    found: dict[str, tuple[str, str]] = {}
    with open(f"/proc/{pid}/net/unix") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if len(fields) >= 7:
                found[f"socket:[{fields[6]}]"] = (fields[3], fields[7] if len(fields) > 7 else "")
    return found


def open_fds(pid: int) -> list[str]:
    """What each open file descriptor of a process points at."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return links


def fd_count(pid: int) -> int:
    """Open file descriptors of a process, other than unix stream sockets.

    Unix sockets are left out: the proxy keeps a pool of idle connections to the agent
    (and the agent the other end of each), which grows with load by design.
    """
    unix = unix_sockets(pid)
    return sum(link not in unix for link in open_fds(pid))


def agent_connections(world: World) -> tuple[int, int]:
    """(connections the agent has accepted, connections the proxy holds to it)."""
    pids = world.chain.pids()
    agent, proxy = pids["agent"][0], pids["proxy"][0]
    path = str(world.chain.agent_socket)
    table = unix_sockets(agent)
    accepted = sum(
        1
        for link in open_fds(agent)
        if link in table and table[link][1] == path and table[link][0] != "00010000"
    )
    table = unix_sockets(proxy)
    clients = sum(1 for link in open_fds(proxy) if link in table and not table[link][1])
    return accepted, clients


def recovered(world: World, baseline: Baseline, timeout: float = 15.0) -> None:
    """Attack connections are gone: the proxy holds no more guest connections than before,
    and the agent only those of the proxy's pool."""
    proxy = baseline.pids["proxy"][0]
    wait_for(lambda: fd_count(proxy) <= baseline.fds["proxy"] + 8, timeout, "proxy descriptors")

    def agent_settled() -> bool:
        accepted, clients = agent_connections(world)
        return accepted <= clients + 4

    wait_for(agent_settled, timeout, "agent connections beyond the proxy's pool")


@dataclass
class Baseline:
    """PIDs and store revision before an attack."""

    pids: dict[str, list[int]]
    revision: int
    fds: dict[str, int] = field(default_factory=dict)

    @classmethod
    def take(cls, world: World) -> Baseline:
        pids = world.chain.pids()
        fds = {name: fd_count(pids[name][0]) for name in ("agent", "proxy")}
        return cls(pids, revision(world), fds)


def check_intact(world: World, baseline: Baseline) -> None:
    """Same PIDs as before, every process alive, and guests of both projects served."""
    assert world.chain.pids() == baseline.pids, (baseline.pids, world.chain.pids())
    for pids in baseline.pids.values():
        for pid in pids:
            assert os.path.exists(f"/proc/{pid}"), f"pid {pid} is gone"
    served_own(world, ("a_dhcp", "b_router"))


def served_own(world: World, keys: Iterable[str]) -> None:
    """Each guest still gets its own identity, quickly."""
    for key in keys:
        guest = world.guests[key]
        reply = curl(guest.netns, METADATA + MD)
        assert reply.status == 200, (key, reply)
        assert json.loads(reply.body)["uuid"] == guest.uuid
        assert reply.seconds < 2.0, (key, reply.seconds)


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    """Poll `predicate()` every 50 ms until true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def p99(values: Sequence[float]) -> float:
    """The 99th percentile (nearest rank) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
