"""The change feed: one revision per change, commit order, instance/network ids, across stores."""

from __future__ import annotations

import threading

import pytest

from metastack.errors import Conflict
from metastack.store.specs import (
    InstanceCreate,
    NetworkCreate,
    PortCreate,
    PortUpdate,
    ProjectCreate,
    SubnetCreate,
)
from metastack.store.sql import SqlStore

VM_A = "11111111-1111-4111-8111-111111111111"
VM_B = "22222222-2222-4222-8222-222222222222"


def test_every_write_is_one_change(sql_store: SqlStore) -> None:
    assert sql_store.current_revision() == 0 and sql_store.changes_since(0) == []
    network = sql_store.create_network(NetworkCreate(project_id="p1"))
    subnet = sql_store.create_subnet(SubnetCreate(network_id=network.id, cidr="10.0.0.0/24"))
    sql_store.create_instance(InstanceCreate(uuid=VM_A, name="a", project_id="p1"))
    sql_store.create_instance(InstanceCreate(uuid=VM_B, name="b", project_id="p1"))
    port = sql_store.create_port(PortCreate(network_id=network.id, device_id=VM_A))
    sql_store.update_port(port.id, PortUpdate(device_id=VM_B))
    changes = sql_store.changes_since(0)
    assert [c.revision for c in changes] == list(range(1, 8))
    assert sql_store.current_revision() == 7
    assert (changes[1].resource, changes[1].network_id, changes[1].instance_id) == (
        "subnet",
        network.id,
        "",
    )
    assert changes[1].resource_id == subnet.id
    assert [(c.resource, c.action, c.instance_id) for c in changes[4:]] == [
        ("port", "create", VM_A),
        ("port", "update", VM_B),
        ("port", "update", VM_A),
    ]
    assert all(c.network_id == network.id for c in changes[4:])
    a, b = sql_store.load_instance(VM_A), sql_store.load_instance(VM_B)
    assert a is not None and b is not None
    assert (a.revision, b.revision, a.vifs, len(b.vifs)) == (7, 6, (), 1)
    assert sql_store.changes_since(5, limit=1)[0].revision == 6


def test_failed_write_leaves_no_trace(sql_store: SqlStore) -> None:
    sql_store.create_project(ProjectCreate(id="p", name="p"))
    with pytest.raises(Conflict):
        sql_store.create_project(ProjectCreate(id="p", name="p"))
    assert sql_store.current_revision() == 1
    assert len(sql_store.changes_since(0)) == 1


def test_second_store_sees_writes(database_url: str, sql_store: SqlStore) -> None:
    other = SqlStore(database_url)
    try:
        other.create_project(ProjectCreate(name="from elsewhere"))
        assert sql_store.current_revision() == 1
        assert sql_store.changes_since(0)[0].resource == "project"
    finally:
        other.close()


def test_concurrent_writers_get_distinct_ordered_revisions(
    database_url: str, sql_store: SqlStore
) -> None:
    stores = [SqlStore(database_url) for _ in range(4)]
    errors: list[BaseException] = []

    def write(store: SqlStore, index: int) -> None:
        try:
            for n in range(10):
                store.create_project(ProjectCreate(id=f"p{index}-{n}", name="x"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(s, i)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == []
    changes = sql_store.changes_since(0)
    assert [c.revision for c in changes] == list(range(1, 41))
    for index in range(4):  # each writer's own changes appear in the order it made them
        mine = [c.resource_id for c in changes if c.resource_id.startswith(f"p{index}-")]
        assert mine == [f"p{index}-{n}" for n in range(10)]
