"""`metastack api` on a private PostgreSQL: /readyz is 503 while the database is stopped and
200 again once it is back; /healthz stays 200 throughout (the process lives)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.observe import get, metrics_url, wait_for

from .conftest import PrivatePostgres

pytestmark = [
    pytest.mark.root,
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

METASTACK = str(Path(sys.executable).with_name("metastack"))


def test_readyz_follows_the_database(tmp_path: Path, private_postgres: PrivatePostgres) -> None:
    private_postgres.start()
    config = tmp_path / "api.toml"
    config.write_text(
        "[api]\n"
        f'database_url = "{private_postgres.url}"\n'
        'metadata_proxy_shared_secret = "readiness"\n'
        'control_listen = "127.0.0.1:0"\n'
        'metadata_listen = "127.0.0.1:0"\n'
        'metrics_listen = "127.0.0.1:0"\n'
        "workers = 2\n"
    )
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [METASTACK, "api", "--config", str(config)], stdout=out, stderr=out
        )
    try:
        base = metrics_url(log)
        wait_for(lambda: get(base + "/readyz")[0] == 200, 30, "ready with the database up")

        private_postgres.stop("immediate")
        # Every scrape, whichever worker answers it, says not ready; the process lives.
        wait_for(lambda: get(base + "/readyz")[0] == 503, 15, "not ready once it is down")
        for _ in range(6):
            assert get(base + "/readyz") == (503, b"not ready\n")
            assert get(base + "/healthz") == (200, b"ok\n")
        assert process.poll() is None

        private_postgres.start()
        started = time.monotonic()
        wait_for(lambda: get(base + "/readyz")[0] == 200, 30, "ready again once it is back")
        for _ in range(6):
            assert get(base + "/readyz")[0] == 200
        assert time.monotonic() - started < 30
        assert re.search(r"not ready: the database does not answer", log.read_text())
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
