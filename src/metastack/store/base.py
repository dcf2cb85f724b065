"""What the metadata API needs from the store, as a Protocol (SQL and in-memory implementations)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from metastack.metadata.model import Instance

Resource = Literal["project", "network", "subnet", "router", "port", "instance"]
Action = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change feed: every write bumps the global revision by one."""

    revision: int
    resource: Resource
    resource_id: str
    action: Action
    project_id: str = ""
    network_id: str = ""  # the network a port/subnet/router interface belongs to, if any
    instance_id: str = ""  # the instance whose metadata this change affects, if any


class MetadataStore(Protocol):
    """Read side of the store used by the metadata API (sync; called from a thread pool)."""

    def load_instance(self, uuid: str) -> Instance | None:
        """The full snapshot of one instance (ports, networks, subnets included), or None."""

    def find_instances_by_ip(self, ip_address: str) -> list[str]:
        """Uuids of instances owning a port with this fixed IP (direct mode), any network."""

    def set_password(self, uuid: str, password: str) -> bool:
        """Store the guest's password once: False if one is already set. NotFound if no instance."""

    def current_revision(self) -> int:
        """The global revision: the number of the last committed change (0 when none)."""

    def changes_since(self, revision: int, limit: int = 1000) -> list[Change]:
        """Changes with a revision greater than `revision`, oldest first, at most `limit`."""
