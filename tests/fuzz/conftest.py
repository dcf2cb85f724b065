"""Fuzz fixtures: real apps served in a background thread (sync clients) over a fresh SQLite."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from metastack.api.control import make_control_app
from metastack.api.metadata_app import MetadataServer
from metastack.config import ApiConfig
from metastack.store.migrate import upgrade
from metastack.store.specs import InstanceCreate, NetworkAttach, NetworkCreate, SubnetCreate
from metastack.store.sql import SqlStore
from support.serving import serving

SECRET = "fuzz-secret"


@dataclass
class LiveApi:
    """An API listening on 127.0.0.1:<port> and the store under it."""

    base: str
    port: int
    store: SqlStore
    mode: str = ""


@pytest.fixture(scope="module")
def fuzz_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SqlStore]]:
    """A migrated SQLite file and a store on it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'metastack.sqlite'}"
    upgrade(url)
    store = SqlStore(url)
    yield url, store
    store.close()


@pytest.fixture(scope="module")
def live_control_api(fuzz_store: tuple[str, SqlStore]) -> Iterator[LiveApi]:
    """The control API on an ephemeral port."""
    url, store = fuzz_store
    config = ApiConfig.model_validate({"database_url": url})
    with serving(make_control_app(config, store, poll_interval=0.02)) as port:
        yield LiveApi(f"http://127.0.0.1:{port}", port, store)


@dataclass(frozen=True)
class Tenants:
    """The caller's instance and another project's instance whose data must never leak."""

    caller_uuid: str
    caller_project: str
    other_uuid: str
    other_secrets: tuple[str, ...]


def make_tenants(store: SqlStore) -> Tenants:
    """Two instances in two projects, each with a port, user data, metadata and a key."""
    network = store.create_network(NetworkCreate(project_id="shared", name="flat"))
    store.create_subnet(SubnetCreate(network_id=network.id, cidr="127.0.0.0/24"))
    uuids = []
    for who, address in (("caller", "127.0.0.1"), ("victim", "127.0.0.2")):
        instance = store.create_instance(
            InstanceCreate(
                name=f"{who}-vm",
                project_id=f"{who}-project",
                user_data=base64.b64encode(f"{who.upper()}-USER-DATA".encode()).decode(),
                metadata={"owner": f"{who}-meta-value"},
                key_name=f"{who}-key",
                public_key=f"ssh-ed25519 AAAA{who}KEY",
                networks=[NetworkAttach(network_id=network.id, ip_address=address)],
            )
        )
        uuids.append(instance.uuid)
    return Tenants(
        caller_uuid=uuids[0],
        caller_project="caller-project",
        other_uuid=uuids[1],
        other_secrets=(
            uuids[1],
            "victim-vm",
            "victim-project",
            "VICTIM-USER-DATA",
            base64.b64encode(b"VICTIM-USER-DATA").decode(),
            "victim-meta-value",
            "victim-key",
            "AAAAvictimKEY",
            "127.0.0.2",
        ),
    )


@pytest.fixture(scope="module")
def tenants(fuzz_store: tuple[str, SqlStore]) -> Tenants:
    """The two instances, created once per module."""
    return make_tenants(fuzz_store[1])


@pytest.fixture(scope="module", params=["signed", "direct"])
def live_metadata_api(
    request: pytest.FixtureRequest, fuzz_store: tuple[str, SqlStore], tenants: Tenants
) -> Iterator[LiveApi]:
    """The metadata API: signed-header mode, or direct mode finding the caller by 127.0.0.1."""
    url, store = fuzz_store
    config = ApiConfig.model_validate(
        {
            "database_url": url,
            "metadata_proxy_shared_secret": SECRET,
            "service_metadata_proxy": request.param == "signed",
        }
    )
    with serving(MetadataServer(config, store)) as port:
        yield LiveApi(f"http://127.0.0.1:{port}", port, store, request.param)
