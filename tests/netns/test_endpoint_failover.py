"""Two API nodes, each in its own namespace, behind one agent in a third (veth links only,
nothing in the root namespace but the agent's unix socket). A node "powered off": nft
drops every packet on its link, so SYNs and data vanish and no reset ever comes. Under a
steady stream of guest requests the agent finds it down within a second, fails nothing
beyond what was in flight, sends a cut-off GET again, never a POST the node received, and
takes the node back when its link returns. Everything is removed after, on failure too.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from integration.agent.agent_fakes import SECRET as STUB_SECRET
from metastack.lab.chain import Chain
from netns.conftest import METASTACK, Processes
from support.needs import missing

SECRET = "failover-secret"
TOKEN = "failover-token"
NODES = ("n1", "n2")
GUESTS = 60
NETWORK = "2f6c1d1e-9c1a-4b8e-9f00-0000000000f1"
STUB = Path(__file__).parents[1] / "integration" / "agent" / "stub_node.py"
# A vendor data target in each node's namespace: n1's answers after 4 s, so a
# vendor_data2.json request is still in flight on n1 when its link goes dark.
TARGET = """
import http.server, json, sys, time
name, delay = sys.argv[1], float(sys.argv[2])
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(delay)
        body = json.dumps({"node": name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8099), Handler).serve_forever()
"""
DARK = """table inet msdark {
    chain in { type filter hook input priority -200; policy accept; iifname "uplink" drop; }
    chain out { type filter hook output priority -200; policy accept; oifname "uplink" drop; }
}
"""
# Answers of more than 1000 bytes leaving the metadata port: guests' user data, never a
# probe's answer (HEAD /).
COUNT = """table inet mscount {
    chain out {
        type filter hook output priority 0; policy accept;
        tcp sport 8775 meta length > 1000 counter;
    }
}
"""


@pytest.fixture(scope="module", autouse=True)
def _nft_present() -> None:
    reason = missing("the failover tests", ("ip", "nft"), cloud_init=False)
    if reason:
        pytest.skip(reason)


def run(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Fabric:
    """The agent's namespace and one namespace per node, linked by veth pairs."""

    prefix: str
    agent: str
    nodes: dict[str, str] = field(default_factory=dict)  # name -> namespace
    addresses: dict[str, str] = field(default_factory=dict)  # name -> node address

    def go_dark(self, name: str) -> float:
        """Drop every packet on the node's link; returns the wall-clock time just before
        (so times measured from it are never shorter than the real ones)."""
        began = time.time()
        run("ip", "netns", "exec", self.nodes[name], "nft", "-f", "-", stdin=DARK)
        return began

    def light(self, name: str) -> float:
        """Let the node's packets through again; the wall-clock time just before."""
        began = time.time()
        run("ip", "netns", "exec", self.nodes[name], "nft", "delete", "table", "inet", "msdark")
        return began

    def answers(self, name: str) -> int:
        """How many large answers the node's metadata API has sent so far."""
        text = run(
            "ip", "netns", "exec", self.nodes[name], "nft", "list", "table", "inet", "mscount"
        )
        match = re.search(r"counter packets (\d+)", text)
        assert match is not None, text
        return int(match.group(1))


@pytest.fixture(scope="module")
def fabric() -> Iterator[Fabric]:
    prefix = f"ms-{secrets.token_hex(3)}-"
    built = Fabric(prefix, f"{prefix}agent")
    made: list[str] = []
    try:
        for namespace in (built.agent, *(prefix + name for name in NODES)):
            run("ip", "netns", "add", namespace)
            made.append(namespace)
            run("ip", "-n", namespace, "link", "set", "lo", "up")
        for index, name in enumerate(NODES, 1):
            namespace = prefix + name
            built.nodes[name] = namespace
            built.addresses[name] = f"10.251.{index}.2"
            # Made directly inside the two namespaces: nothing touches the root namespace.
            run("ip", "-n", built.agent, "link", "add", name, "type", "veth",
                "peer", "name", "uplink", "netns", namespace)  # fmt: skip
            run("ip", "-n", built.agent, "addr", "add", f"10.251.{index}.1/24", "dev", name)
            run("ip", "-n", namespace, "addr", "add", f"10.251.{index}.2/24", "dev", "uplink")
            run("ip", "-n", built.agent, "link", "set", name, "up")
            run("ip", "-n", namespace, "link", "set", "uplink", "up")
            run("ip", "netns", "exec", namespace, "nft", "-f", "-", stdin=COUNT)
        yield built
    finally:
        for namespace in made:
            subprocess.run(["ip", "netns", "delete", namespace], check=False, capture_output=True)
        left = run("ip", "netns", "list")
        assert prefix not in left


@pytest.fixture
def processes() -> Iterator[Processes]:
    held = Processes()
    yield held
    held.stop_all()


def wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def start_agent(
    fabric: Fabric,
    processes: Processes,
    workdir: Path,
    metadata: list[str],
    control: list[str],
    secret: str = SECRET,
) -> Path:
    socket_path = workdir / "agent.sock"
    config = workdir / "agent.toml"
    config.write_text(
        "[agent]\n"
        f'metadata_proxy_socket = "{socket_path}"\n'
        f'metadata_proxy_shared_secret = "{secret}"\n'
        f'admin_token = "{TOKEN}"\n'
        f"metadata_endpoints = {json.dumps(metadata)}\n"
        f"control_url = {json.dumps(control)}\n"
        "upstream_timeout = 4.0\n"
        "upstream_connect_timeout = 2.0\n"
        "feed_wait = 10\n"
    )
    log = workdir / "agent.log"
    agent = processes.start(
        ["ip", "netns", "exec", fabric.agent, str(METASTACK), "agent", "--config", str(config)], log
    )
    wait_for(lambda: socket_path.exists() or agent.poll() is not None, "the agent's socket")
    assert agent.poll() is None, log.read_text()
    return socket_path


def log_lines(log: Path) -> list[tuple[float, str]]:
    """The agent's log lines with their wall-clock times (lines without one left out)."""
    lines = []
    for line in log.read_text().splitlines():
        try:
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
        except ValueError:
            continue
        lines.append((stamp.timestamp(), line))
    return lines


def log_times(log: Path, pattern: str) -> list[float]:
    """Wall-clock times of the agent's log lines that match `pattern`."""
    return [at for at, line in log_lines(log) if re.search(pattern, line)]


@dataclass
class Outcome:
    began: float  # wall clock
    took: float
    status: int
    body: bytes


async def guest_request(
    session: aiohttp.ClientSession,
    guest: int,
    path: str,
    method: str = "GET",
    data: bytes | None = None,
) -> Outcome:
    """One request as the namespace proxy would send it for guest `guest` of net-f."""
    headers = {"X-Forwarded-For": f"10.60.0.{10 + guest}", "X-Neutron-Network-ID": NETWORK}
    began, started = time.time(), time.monotonic()
    try:
        async with session.request(
            method, path, headers=headers, data=data, timeout=aiohttp.ClientTimeout(total=15)
        ) as response:
            return Outcome(
                began, time.monotonic() - started, response.status, await response.read()
            )
    except (aiohttp.ClientError, TimeoutError):
        return Outcome(began, time.monotonic() - started, -1, b"")


@pytest.fixture
async def session_on(tmp_path: Path) -> AsyncIterator[Any]:
    sessions: list[aiohttp.ClientSession] = []

    def open_on(path: Path) -> aiohttp.ClientSession:
        session = aiohttp.ClientSession(
            connector=aiohttp.UnixConnector(path=str(path)), base_url="http://metadata"
        )
        sessions.append(session)
        return session

    yield open_on
    for session in sessions:
        await session.close()


def seed_database(workdir: Path, database: str) -> None:
    """Create net-f with GUESTS instances (2 KiB of user data each) through an API on
    loopback that is stopped again before the nodes start."""
    chain = Chain(workdir / "seed", api={"database_url": database}, admin_token=TOKEN)
    try:
        chain.start_api()
        chain.call("POST", "/v1/projects", {"id": "proj-f", "name": "proj-f"})
        chain.call("POST", "/v1/networks", {"id": NETWORK, "name": "net-f", "project_id": "proj-f"})
        chain.call(
            "POST",
            "/v1/subnets",
            {
                "network_id": NETWORK,
                "cidr": "10.60.0.0/24",
                "ip_version": 4,
                "gateway_ip": "10.60.0.1",
            },
        )
        for guest in range(GUESTS):
            user_data = f"#cloud-config\n# guest {guest}\n" + "x" * 2048
            chain.call(
                "POST",
                "/v1/instances",
                {
                    "name": f"g{guest}",
                    "project_id": "proj-f",
                    "networks": [{"network_id": NETWORK, "ip_address": f"10.60.0.{10 + guest}"}],
                    "user_data": base64.b64encode(user_data.encode()).decode(),
                },
            )
    finally:
        chain.stop()


def start_api_nodes(fabric: Fabric, processes: Processes, workdir: Path, database: str) -> None:
    for name, delay in zip(NODES, ("4", "0"), strict=True):
        namespace, address = fabric.nodes[name], fabric.addresses[name]
        target = workdir / "target.py"
        target.write_text(TARGET)
        processes.start(
            ["ip", "netns", "exec", namespace, sys.executable, str(target), name, delay],
            workdir / f"target-{name}.log",
        )
        config = workdir / f"api-{name}.toml"
        config.write_text(
            "[api]\n"
            f'database_url = "{database}"\n'
            f'metadata_proxy_shared_secret = "{SECRET}"\n'
            f'admin_token = "{TOKEN}"\n'
            f'control_listen = "{address}:8774"\n'
            f'metadata_listen = "{address}:8775"\n'
            "workers = 1\n"
            "[api.vendordata]\n"
            'providers = ["DynamicJSON"]\n'
            'dynamic_targets = ["node@http://127.0.0.1:8099/"]\n'
            "dynamic_read_timeout = 6\n"
        )
        log = workdir / f"api-{name}.log"
        api = processes.start(
            ["ip", "netns", "exec", namespace, str(METASTACK), "api", "--config", str(config)], log
        )
        wait_for(
            lambda log=log, api=api: (
                api.poll() is not None or log.read_text().count("API listening on") >= 2
            ),
            f"the API of {name}",
        )
        assert api.poll() is None, log.read_text()


async def test_real_api_nodes_one_going_dark_under_a_steady_stream(
    fabric: Fabric, processes: Processes, tmp_path: Path, session_on: Any
) -> None:
    database = f"sqlite:///{tmp_path / 'metastack.sqlite'}"
    seed_database(tmp_path, database)
    start_api_nodes(fabric, processes, tmp_path, database)
    n1, n2 = (fabric.addresses[name] for name in NODES)
    socket_path = start_agent(
        fabric,
        processes,
        tmp_path,
        [f"http://{n1}:8775", f"http://{n2}:8775"],
        [f"http://{n1}:8774", f"http://{n2}:8774"],
    )
    agent_log = tmp_path / "agent.log"
    session = session_on(socket_path)
    outcomes: list[asyncio.Task[Outcome]] = []
    stop = asyncio.Event()

    async def stream() -> None:  # a request every 20 ms, each guest in turn
        sequence = 0
        while not stop.is_set():
            path = f"/openstack/latest/user_data?seq={sequence}"
            outcomes.append(asyncio.create_task(guest_request(session, sequence % GUESTS, path)))
            sequence += 1
            await asyncio.sleep(0.02)

    streaming = asyncio.create_task(stream())
    await asyncio.sleep(2.0)
    served = {name: fabric.answers(name) for name in NODES}
    # vendor_data2.json, one at a time until one lands on n1, whose target takes 4 s: that
    # one is in flight when n1 goes dark (n2 answers the others at once).
    vendor = "/openstack/latest/vendor_data2.json"
    held: asyncio.Task[Outcome] | None = None
    for _ in range(10):
        task = asyncio.create_task(guest_request(session, 0, vendor))
        await asyncio.sleep(0.5)
        if not task.done():
            held = task
            break
        assert b'"n2"' in task.result().body
    assert held is not None, "no vendor data request went to n1"
    dark_at = fabric.go_dark("n1")
    await asyncio.sleep(2.5)
    served_dark = fabric.answers("n1")
    back_at = fabric.light("n1")
    await asyncio.sleep(2.0)
    stop.set()
    await streaming
    results = await asyncio.gather(*outcomes)
    held_result = held.result()
    served_after = fabric.answers("n1")

    down = log_times(agent_log, rf"metadata API http://{n1}:8775 is down")
    control_down = log_times(agent_log, rf"control API http://{n1}:8774 is down")
    up = log_times(agent_log, rf"metadata API http://{n1}:8775 answers again")
    in_flight = [r for r in results if r.began <= dark_at <= r.began + r.took]
    failed = [r for r in results if r.status != 200]
    after_down = [r for r in results if down and down[0] + 0.05 < r.began < back_at]
    nan = float("nan")
    detected = down[0] - dark_at if down else nan
    control_detected = control_down[0] - dark_at if control_down else nan
    taken_back = up[-1] - back_at if up else nan
    held_answered = held_result.began + held_result.took - dark_at
    print(
        f"\n{len(results)} requests, {len(in_flight)} in flight at the cut, {len(failed)} failed;"
        f" n1 down after {detected:.3f} s (control API {control_detected:.3f} s), taken back"
        f" {taken_back:.3f} s after its link returned; large answers before the cut {served},"
        f" n1's at the end of the dark {served_dark} and after {served_after}; the vendor data"
        f" request held by n1 answered {held_answered:.3f} s after the cut; slowest after the"
        f" detection {max((r.took for r in after_down), default=nan):.3f} s"
    )
    assert served["n1"] > 10 and served["n2"] > 10  # spread over both nodes
    assert 0 < detected < 1.0 and 0 < control_detected < 1.0
    assert len(failed) <= len(in_flight)
    assert not failed  # all GETs: every one cut off was sent again to n2
    assert all(r.took < 0.5 for r in after_down) and len(after_down) > 50
    # The request in flight on n1 at the cut was answered by n2 soon after the detection.
    assert held_result.status == 200 and b'"n2"' in held_result.body
    assert held_answered < 1.5
    # Taken back: probes see it within a second, and it serves guests again.
    assert 0 < taken_back < 1.0
    assert served_after > served_dark


def start_stub_nodes(fabric: Fabric, processes: Processes, workdir: Path) -> dict[str, Any]:
    """Stub API nodes (recording every request) on the nodes' addresses."""
    nodes: dict[str, Any] = {}
    for name in NODES:
        out, records = workdir / f"stub-{name}.out", workdir / f"stub-{name}.log"
        records.touch()
        argv = [sys.executable, str(STUB), name, fabric.addresses[name], str(records)]
        stub = processes.start(["ip", "netns", "exec", fabric.nodes[name], *argv], out)
        wait_for(
            lambda out=out, stub=stub: "ports" in out.read_text() or stub.poll() is not None, name
        )
        _, metadata_port, control_port = out.read_text().split()[:3]
        address = fabric.addresses[name]
        nodes[name] = {
            "metadata": f"http://{address}:{metadata_port}",
            "control": f"http://{address}:{control_port}",
            "records": records,
        }
    return nodes


def posts(records: Path, prefix: str) -> list[str]:
    lines = [json.loads(line) for line in records.read_text().splitlines()]
    return [
        line["path"]
        for line in lines
        if line["method"] == "POST" and line["path"].startswith(prefix)
    ]


async def test_a_post_the_dark_node_received_is_not_sent_again_one_it_never_received_is(
    fabric: Fabric, processes: Processes, tmp_path: Path, session_on: Any
) -> None:
    nodes = start_stub_nodes(fabric, processes, tmp_path)
    socket_path = start_agent(
        fabric,
        processes,
        tmp_path,
        [nodes[name]["metadata"] for name in NODES],
        [nodes[name]["control"] for name in NODES],
        secret=STUB_SECRET,
    )
    agent_log = tmp_path / "agent.log"
    session = session_on(socket_path)
    headers = {"X-Forwarded-For": "10.0.0.5", "X-Neutron-Network-ID": "net-a"}

    async def post(path: str) -> tuple[int, str, float]:
        began = time.monotonic()
        async with session.post(path, headers=headers, data=b"password") as response:
            return response.status, await response.text(), time.monotonic() - began

    # Keep-alive connections to both nodes, for the POSTs below to find.
    warm = [session.get(f"/warm/{index}", headers=headers) for index in range(8)]
    for response in await asyncio.gather(*warm):
        assert response.status == 200
        response.release()
    # Two at once: n1 receives and holds one (its TCP acknowledged it), n2 answers the other.
    held = [asyncio.ensure_future(post("/hold/n1/password")) for _ in range(2)]
    for _ in range(500):
        if posts(nodes["n1"]["records"], "/hold/"):
            break
        await asyncio.sleep(0.01)
    assert posts(nodes["n1"]["records"], "/hold/") == ["/hold/n1/password"]
    await asyncio.sleep(0.2)
    dark_at = fabric.go_dark("n1")
    # Sent while n1 is dark but not yet known so: each node gets some (n2 takes 1 s for each
    # of these, so they pile up there too); those on n1 vanish unacknowledged.
    fresh = await asyncio.gather(*(post(f"/slow/n2/{index}") for index in range(6)))
    held_results = await asyncio.gather(*held)
    fabric.light("n1")
    cut_off = [
        line
        for at, line in log_lines(agent_log)
        if at > dark_at and "trying another" in line and nodes["n1"]["metadata"] in line
    ]
    print(f"\nheld {held_results}\nfresh {fresh}\ncut off:\n" + "\n".join(cut_off))
    assert sorted(status for status, _, _ in held_results) == [200, 503]
    assert next(took for status, _, took in held_results if status == 503) > 3.5
    assert posts(nodes["n1"]["records"], "/hold/") == ["/hold/n1/password"]
    assert posts(nodes["n2"]["records"], "/hold/") == ["/hold/n1/password"]  # its own copy
    assert [status for status, _, _ in fresh] == [200] * 6
    assert all('"api": "n2"' in body for _, body, _ in fresh)
    assert sorted(posts(nodes["n2"]["records"], "/slow/")) == [f"/slow/n2/{i}" for i in range(6)]
    assert posts(nodes["n1"]["records"], "/slow/") == []
    # Some were sent to n1 on a kept-alive connection, never acknowledged, and sent again.
    assert any("NotSent(" in line for line in cut_off)
