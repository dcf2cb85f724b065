"""SQLAlchemy 2 typed tables: the single source the Alembic migrations are written against."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    """Timezone-aware now, the value of every created_at/updated_at column."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class RevisionCounter(Base):
    """One row (id 1): the global revision, bumped with UPDATE ... RETURNING by every write."""

    __tablename__ = "revision_counter"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class ChangeRow(Base):
    __tablename__ = "changes"
    revision: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    resource: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    project_id: Mapped[str] = mapped_column(String(64), default="")
    network_id: Mapped[str] = mapped_column(String(64), default="")
    instance_id: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ProjectRow(Base):
    __tablename__ = "projects"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class NetworkRow(Base):
    __tablename__ = "networks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    mtu: Mapped[int] = mapped_column(Integer, default=1500)
    created_revision: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SubnetRow(Base):
    __tablename__ = "subnets"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    cidr: Mapped[str] = mapped_column(String(64))
    ip_version: Mapped[int] = mapped_column(Integer)
    gateway_ip: Mapped[str | None] = mapped_column(String(64))
    dns_nameservers: Mapped[list[Any]] = mapped_column(default=list)
    host_routes: Mapped[list[Any]] = mapped_column(default=list)
    enable_dhcp: Mapped[bool] = mapped_column(Boolean, default=True)
    ipv6_address_mode: Mapped[str | None] = mapped_column(String(32))
    created_revision: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class RouterRow(Base):
    __tablename__ = "routers"
    __table_args__ = (Index("uq_routers_project_id_vrid", "project_id", "vrid", unique=True),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    # HA routers (VRRP on several L3 agents) get a VRRP id unique within their project:
    # their advertisements run on a segment of that project (neutron's per-project HA
    # network), so two HA routers that share a segment never share an id.
    ha: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    vrid: Mapped[int | None] = mapped_column(Integer)
    created_revision: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PortRow(Base):
    __tablename__ = "ports"
    __table_args__ = (UniqueConstraint("network_id", "mac_address"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    network_id: Mapped[str] = mapped_column(ForeignKey("networks.id"), index=True)
    project_id: Mapped[str] = mapped_column(String(64))
    mac_address: Mapped[str] = mapped_column(String(17))
    device_id: Mapped[str] = mapped_column(String(255), default="", index=True)
    device_owner: Mapped[str] = mapped_column(String(255), default="")
    floating_ip: Mapped[str | None] = mapped_column(String(64))
    vif_type: Mapped[str] = mapped_column(String(64), default="bridge")
    device_name: Mapped[str | None] = mapped_column(String(64))
    created_revision: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FixedIpRow(Base):
    __tablename__ = "fixed_ips"
    __table_args__ = (
        UniqueConstraint("network_id", "ip_address"),
        Index("ix_fixed_ips_ip_address", "ip_address"),
    )
    port_id: Mapped[str] = mapped_column(
        ForeignKey("ports.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnets.id"), index=True)
    network_id: Mapped[str] = mapped_column(String(36))
    ip_address: Mapped[str] = mapped_column(String(64))


class ImageIdRow(Base):
    """Image/kernel/ramdisk uuid -> EC2 integer (ami-%08x), made on first use (nova s3_images)."""

    __tablename__ = "ec2_image_ids"
    __table_args__ = ({"sqlite_autoincrement": True},)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(255), unique=True)


class InstanceRow(Base):
    __tablename__ = "instances"
    __table_args__ = ({"sqlite_autoincrement": True},)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # EC2 i-%08x
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(255))
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[str] = mapped_column(String(64), default="")
    availability_zone: Mapped[str | None] = mapped_column(String(255))
    launch_index: Mapped[int] = mapped_column(Integer, default=0)
    reservation_id: Mapped[str] = mapped_column(String(255))
    image_ref: Mapped[str | None] = mapped_column(String(255))
    image_ec2_id: Mapped[int | None] = mapped_column(Integer)
    kernel_id: Mapped[str | None] = mapped_column(String(255))
    kernel_ec2_id: Mapped[int | None] = mapped_column(Integer)
    ramdisk_id: Mapped[str | None] = mapped_column(String(255))
    ramdisk_ec2_id: Mapped[int | None] = mapped_column(Integer)
    flavor_name: Mapped[str] = mapped_column(String(255), default="")
    root_device_name: Mapped[str | None] = mapped_column(String(255))
    default_ephemeral_device: Mapped[str | None] = mapped_column(String(255))
    default_swap_device: Mapped[str | None] = mapped_column(String(255))
    block_device_mapping: Mapped[list[Any]] = mapped_column(default=list)
    key_name: Mapped[str | None] = mapped_column(String(255))
    key_type: Mapped[str] = mapped_column(String(16), default="ssh")
    public_key: Mapped[str | None] = mapped_column(Text)
    user_data: Mapped[str | None] = mapped_column(Text)  # base64, as given
    metadata_items: Mapped[list[Any]] = mapped_column(default=list)  # [[key, value], ...]
    security_groups: Mapped[list[Any]] = mapped_column(default=list)
    device_tags: Mapped[list[Any]] = mapped_column(default=list)
    dedicated_cpus: Mapped[list[Any]] = mapped_column(default=list)
    boot_roles: Mapped[str] = mapped_column(String(1024), default="")
    password: Mapped[str] = mapped_column(Text, default="")
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AgentRow(Base):
    """A network node's netagent: registered and kept alive by its periodic state reports."""

    __tablename__ = "agents"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    host: Mapped[str] = mapped_column(String(255), unique=True)
    capabilities: Mapped[list[Any]] = mapped_column(default=list)  # of "dhcp", "l3", "metadata"
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DhcpBindingRow(Base):
    """A network served by a DHCP-capable agent; `binding_index` is its slot (1, 2, ...),
    unique per network, so no race can give a network two bindings in one slot."""

    __tablename__ = "dhcp_agent_bindings"
    __table_args__ = (UniqueConstraint("network_id", "binding_index"),)
    network_id: Mapped[str] = mapped_column(
        ForeignKey("networks.id", ondelete="CASCADE"), primary_key=True
    )
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    binding_index: Mapped[int] = mapped_column(Integer)


class L3BindingRow(Base):
    """A router served by an L3-capable agent (several for an HA router), slot as above."""

    __tablename__ = "l3_agent_bindings"
    __table_args__ = (UniqueConstraint("router_id", "binding_index"),)
    router_id: Mapped[str] = mapped_column(
        ForeignKey("routers.id", ondelete="CASCADE"), primary_key=True
    )
    agent_id: Mapped[str] = mapped_column(
        ForeignKey("agents.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    binding_index: Mapped[int] = mapped_column(Integer)
