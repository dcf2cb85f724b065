"""Agents and scheduling: agents, their DHCP (network) and L3 (router) bindings, HA routers.

Revision ID: 0002_agents
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002_agents"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add the agents and binding tables, and the routers' `ha` flag and VRRP id."""
    op.create_table(
        "agents",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("capabilities", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
        sa.UniqueConstraint("host", name=op.f("uq_agents_host")),
    )
    op.create_table(
        "dhcp_agent_bindings",
        sa.Column("network_id", sa.String(length=36), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("binding_index", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_dhcp_agent_bindings_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["network_id"],
            ["networks.id"],
            name=op.f("fk_dhcp_agent_bindings_network_id_networks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("network_id", "agent_id", name=op.f("pk_dhcp_agent_bindings")),
        sa.UniqueConstraint(
            "network_id",
            "binding_index",
            name=op.f("uq_dhcp_agent_bindings_network_id_binding_index"),
        ),
    )
    op.create_index(op.f("ix_dhcp_agent_bindings_agent_id"), "dhcp_agent_bindings", ["agent_id"])
    op.create_table(
        "l3_agent_bindings",
        sa.Column("router_id", sa.String(length=36), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("binding_index", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agents.id"],
            name=op.f("fk_l3_agent_bindings_agent_id_agents"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["router_id"],
            ["routers.id"],
            name=op.f("fk_l3_agent_bindings_router_id_routers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("router_id", "agent_id", name=op.f("pk_l3_agent_bindings")),
        sa.UniqueConstraint(
            "router_id",
            "binding_index",
            name=op.f("uq_l3_agent_bindings_router_id_binding_index"),
        ),
    )
    op.create_index(op.f("ix_l3_agent_bindings_agent_id"), "l3_agent_bindings", ["agent_id"])
    op.add_column(
        "routers", sa.Column("ha", sa.Boolean(), server_default=sa.false(), nullable=False)
    )
    op.add_column("routers", sa.Column("vrid", sa.Integer(), nullable=True))
    op.create_index("uq_routers_project_id_vrid", "routers", ["project_id", "vrid"], unique=True)


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_index("uq_routers_project_id_vrid", table_name="routers")
    with op.batch_alter_table("routers") as batch:
        batch.drop_column("vrid")
        batch.drop_column("ha")
    op.drop_table("l3_agent_bindings")
    op.drop_table("dhcp_agent_bindings")
    op.drop_table("agents")
