"""An API node as a process: the fake metadata API and the fake control API of
agent_fakes, each request written to a log (one JSON line, flushed on arrival).

    python stub_node.py NAME HOST LOG [GUESTS]

prints `ports <metadata> <control>` once both listen. Paths under /hold/NAME/ are answered
after 30 s by the node called NAME (a request in flight when that node is stopped), paths
under /slow/NAME/ after 1 s; the other nodes answer them at once. GUESTS ports from
10.0.0.100 on net-a give the agent a fresh lookup for every guest. Tests stop the node with
SIGSTOP (or inside a namespace whose packets vanish) and stop it for good by its PID.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the tests folder

from integration.agent.agent_fakes import SECRET, FakeControl, FakeMetadata

HOLD_SECONDS = 30.0


def recording(log: Path, role: str, name: str) -> web.Middleware:
    handle = log.open("a", buffering=1)

    @web.middleware
    async def record(request: web.Request, handler: web.Handler) -> web.StreamResponse:
        line = {"role": role, "method": request.method, "path": request.path_qs}
        handle.write(json.dumps(line) + "\n")
        if request.path.startswith(f"/hold/{name}/"):
            await request.read()
            await asyncio.sleep(HOLD_SECONDS)
        if request.path.startswith(f"/slow/{name}/"):
            await asyncio.sleep(1.0)
        return await handler(request)

    return record


async def serve(app: web.Application, host: str) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    return runner, int(runner.addresses[0][1])


async def main(name: str, host: str, log: Path, guests: int) -> None:
    control = FakeControl()
    control.add_port("p1", "net-a", "10.0.0.5", "inst-a", project_id="proj-a")
    for index in range(guests):
        ip = f"10.0.{index // 150}.{100 + index % 150}"
        control.add_port(f"g{index}", "net-a", ip, f"inst-g{index}", project_id="proj-g")
    metadata_app = FakeMetadata(SECRET, name=name).app()
    metadata_app.middlewares.append(recording(log, "metadata", name))
    control_app = control.app()
    control_app.middlewares.append(recording(log, "control", name))
    runners = []
    try:
        runner, metadata_port = await serve(metadata_app, host)
        runners.append(runner)
        runner, control_port = await serve(control_app, host)
        runners.append(runner)
        print(f"ports {metadata_port} {control_port}", flush=True)
        await asyncio.Event().wait()
    finally:
        for runner in runners:
            await runner.cleanup()


if __name__ == "__main__":
    guests = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), guests))
