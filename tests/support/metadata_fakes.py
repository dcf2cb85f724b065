"""A fake MetadataStore with a change feed, instance factories and signed headers for tests."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from metastack import identity
from metastack.errors import NotFound, StoreUnavailable
from metastack.metadata.model import FixedIp, Instance, Network, Port, Subnet, Vif
from metastack.store.base import Change

SECRET = "s3cret-for-tests"


class FakeStore:
    """In-memory MetadataStore with a change feed; counts loads; can be switched off."""

    def __init__(self) -> None:
        self.instances: dict[str, Instance] = {}
        self.changes: list[Change] = []
        self.loads = 0
        self.down = False
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("database is locked")

    def put(self, instance: Instance) -> None:
        with self._lock:
            action = "update" if instance.uuid in self.instances else "create"
            self.instances[instance.uuid] = instance
            self.changes.append(
                Change(
                    len(self.changes) + 1,
                    "instance",
                    instance.uuid,
                    action,
                    instance.project_id,
                    instance_id=instance.uuid,
                )
            )

    def load_instance(self, uuid: str) -> Instance | None:
        self._check()
        self.loads += 1
        return self.instances.get(uuid)

    def find_instances_by_ip(self, ip_address: str) -> list[str]:
        self._check()
        return [
            i.uuid
            for i in self.instances.values()
            for vif in i.vifs
            for fixed in vif.port.fixed_ips
            if fixed.ip_address == ip_address
        ]

    def set_password(self, uuid: str, password: str) -> bool:
        self._check()
        instance = self.instances.get(uuid)
        if instance is None:
            raise NotFound(uuid)
        if instance.password:
            return False
        self.put(dataclasses.replace(instance, password=password))
        return True

    def current_revision(self) -> int:
        self._check()
        return len(self.changes)

    def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        self._check()
        return self.changes[revision : revision + limit]


def make_instance(uuid: str, project: str, ip: str, **fields: Any) -> Instance:
    network = Network(id=f"net-{project}", name="private", project_id=project, mtu=1450)
    subnet = Subnet(
        id=f"sub-{project}",
        network_id=network.id,
        cidr="10.0.0.0/24",
        ip_version=4,
        gateway_ip="10.0.0.1",
        dns_nameservers=("10.0.0.2",),
    )
    port = Port(
        id=f"port-{uuid}",
        network_id=network.id,
        project_id=project,
        mac_address="fa:16:3e:00:00:01",
        fixed_ips=(FixedIp(subnet.id, ip),),
        device_id=uuid,
        device_owner="compute:nova",
        device_name="tap0",
    )
    defaults: dict[str, Any] = {
        "ec2_id": 1,
        "name": f"vm-{uuid[:4]}",
        "hostname": f"vm-{uuid[:4]}",
        "project_id": project,
        "availability_zone": "nova",
        "vifs": (Vif(port, network, (subnet,)),),
    }
    defaults.update(fields)
    return Instance(uuid=uuid, **defaults)


def signed(uuid: str, project: str, secret: str = SECRET, xff: str = "10.0.0.5") -> dict[str, str]:
    return {
        identity.INSTANCE_ID: uuid,
        identity.TENANT_ID: project,
        identity.INSTANCE_ID_SIGNATURE: identity.sign_instance_id(secret, uuid),
        identity.FORWARDED_FOR: xff,
    }
