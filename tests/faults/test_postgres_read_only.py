"""PostgreSQL turned read-only (as after failing over to a standby): writes 503, reads go on."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine

from metastack.store.migrate import upgrade
from metastack.store.sql import SqlStore

from .conftest import PrivatePostgres, api_config, boot, running

pytestmark = pytest.mark.root


def set_read_only(url: str, on: bool) -> None:
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(
                f"ALTER SYSTEM SET default_transaction_read_only = {'on' if on else 'off'}"
            )
            conn.exec_driver_sql("SELECT pg_reload_conf()")
    finally:
        engine.dispose()


async def test_read_only_database(private_postgres: PrivatePostgres) -> None:
    private_postgres.start()
    url = private_postgres.url
    upgrade(url)
    store = SqlStore(url)
    try:
        async with running(api_config(url), store) as cloud:
            instance = await boot(cloud, "p", "10.0.0.0/24")
            revision = store.current_revision()
            set_read_only(url, True)
            store.engine.dispose()  # settings apply to new sessions

            write = await cloud.write("POST", "/v1/networks", {"project_id": "p", "name": "n"})
            assert write.status == 503, write.body
            assert "read-only" in write.json()["error"], write.body
            password = await cloud.read(
                instance, "/openstack/latest/password", method="POST", data=b"pw"
            )
            assert password.status == 503, (password.status, password.body)
            assert (await cloud.read(instance)).status == 200
            assert (await cloud.write("GET", f"/v1/instances/{instance['uuid']}")).status == 200
            assert store.current_revision() == revision

            set_read_only(url, False)
            store.engine.dispose()
            await cloud.ok("POST", "/v1/networks", {"project_id": "p", "name": "n"})
            assert (
                await cloud.read(instance, "/openstack/latest/password", method="POST", data=b"pw")
            ).status == 200
    finally:
        store.close()
