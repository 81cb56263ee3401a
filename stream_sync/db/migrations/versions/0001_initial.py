"""Channels and their stream keys.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Written by hand to match stream_sync/db/models.py; tests/unit/db compares the two.
Types are spelled out rather than imported from the models, because a migration
must keep meaning what it meant when it was written.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "channels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
        sa.UniqueConstraint("public_id", name=op.f("uq_channels_public_id")),
        sa.UniqueConstraint("name", name=op.f("uq_channels_name")),
    )
    op.create_table(
        "stream_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stream_keys")),
        sa.UniqueConstraint("key_id", name=op.f("uq_stream_keys_key_id")),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_stream_keys_channel_id_channels"),
            ondelete="CASCADE",
        ),
    )
    op.create_index(op.f("ix_stream_keys_channel_id"), "stream_keys", ["channel_id"])
    op.create_index(
        op.f("uq_stream_keys_channel_id_active"),
        "stream_keys",
        ["channel_id"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(op.f("uq_stream_keys_channel_id_active"), table_name="stream_keys")
    op.drop_index(op.f("ix_stream_keys_channel_id"), table_name="stream_keys")
    op.drop_table("stream_keys")
    op.drop_table("channels")
