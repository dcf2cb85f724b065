"""The wheel built from this checkout installs into a clean virtual environment and runs there.

Slow (about a minute: pip fetches the dependencies), but part of the default suite: it is
what an operator who installs metastack gets.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
import urllib.request
import zipfile
from pathlib import Path

from metastack import __version__

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "metastack"
LISTEN_RE = re.compile(r"(\w+) API listening on ([\d.]+):(\d+)")


def run(args: list[str | Path], cwd: Path, timeout: float = 120) -> str:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("METASTACK_", "PYTHON", "VIRTUAL"))
    }
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=clean, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args}: {result.stderr[-3000:]}"
    return result.stdout


def build_wheel(tmp_path: Path) -> Path:
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT], tmp_path, 300)
    (wheel,) = dist.glob("*.whl")
    assert wheel.name == f"metastack-{__version__}-py3-none-any.whl"
    return wheel


def check_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        info = f"metastack-{__version__}.dist-info"
        metadata = archive.read(f"{info}/METADATA").decode()
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
    migrations = {
        str(path.relative_to(PACKAGE.parent))
        for path in (PACKAGE / "store" / "migrations").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }
    assert "metastack/store/migrations/versions/0001_initial.py" in migrations
    assert "metastack/store/migrations/script.py.mako" in migrations
    assert migrations <= names, f"migrations missing from the wheel: {migrations - names}"
    assert {"metastack/py.typed", "metastack/cli.py", "metastack/config_doc.py"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "metastack = metastack.cli:main" in entry_points
    assert f"Version: {__version__}\n" in metadata
    assert "Provides-Extra: postgresql" in metadata
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist: psycopg")]
    assert requires and all(
        "extra == 'postgresql'" in line.replace('"', "'") for line in requires
    ), requires


def make_venv(tmp_path: Path, wheel: Path) -> Path:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], tmp_path)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    run([venv / "bin/python", "-m", "pip", "install", "-q", wheel], tmp_path, 600)
    where = run(
        [venv / "bin/python", "-c", "import metastack; print(metastack.__file__)"], tmp_path
    )
    assert where.startswith(str(venv)), where  # the installed copy, not this checkout
    return venv


def test_wheel_installs_into_a_clean_venv_and_serves(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    check_contents(wheel)
    venv = make_venv(tmp_path, wheel)
    metastack = venv / "bin" / "metastack"

    assert run([metastack, "--version"], tmp_path).strip() == f"metastack, version {__version__}"
    sample = run([metastack, "config", "sample"], tmp_path)
    assert sorted(tomllib.loads(sample)) == ["agent", "api", "netagent", "proxy"]

    database = tmp_path / "api.sqlite"
    config = tmp_path / "api.toml"
    config.write_text(
        "[api]\n"
        f'database_url = "sqlite:///{database}"\n'
        'metadata_proxy_shared_secret = "wheel-test"\n'
        'control_listen = "127.0.0.1:0"\n'
        'metadata_listen = "127.0.0.1:0"\n'
        "workers = 1\n"
    )
    assert "OK" in run([metastack, "api", "--config", config, "--check"], tmp_path)
    check_postgresql_needs_the_extra(metastack, tmp_path)
    serve_from_the_wheel(metastack, config, tmp_path)
    with sqlite3.connect(database) as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert revision == head_revision()  # every migration shipped and run
    assert {"instances", "networks", "ports", "agents", "dhcp_agent_bindings"} <= tables


def head_revision() -> str:
    """The newest migration in this checkout."""
    from alembic.script import ScriptDirectory

    from metastack.store.migrate import MIGRATIONS

    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    assert head is not None
    return head


def check_postgresql_needs_the_extra(metastack: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [metastack, "api", "--check", "--database-url", "postgresql+psycopg://m@db/m"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "METASTACK_API_METADATA_PROXY_SHARED_SECRET": "s"},
    )
    assert result.returncode == 2, result.stderr
    assert "api.database_url: PostgreSQL needs the psycopg driver" in result.stderr
    assert "pip install 'metastack[postgresql]'" in result.stderr


def serve_from_the_wheel(metastack: Path, config: Path, tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [metastack, "api", "--config", config], cwd=tmp_path, stdout=out, stderr=out
        )
    try:
        urls: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(urls) < 2:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            urls = {name: f"http://{h}:{p}" for name, h, p in LISTEN_RE.findall(log.read_text())}
            time.sleep(0.1)
        with urllib.request.urlopen(urls["control"] + "/openapi.json", timeout=10) as response:
            document = json.load(response)
        assert document["openapi"].startswith("3.")
        assert "/v1/instances" in document["paths"]
        with urllib.request.urlopen(urls["control"] + "/v1/networks", timeout=10) as response:
            assert json.load(response) == {"networks": []}  # the tables are there
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=15) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
