"""Outputs: per-channel push targets, recordings, and the channel's record switch.

Revision ID: 0007
Revises: 0006
Create Date: 2027-02-02

Written by hand to match stream_sync/db/models.py; tests/unit/db compares the two.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "channels",
        sa.Column("record", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_table(
        "push_targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=1024), nullable=False),
        sa.Column("key_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("key_hint", sa.String(length=8), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_push_targets_channel_id_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_targets")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_push_targets_channel_id"), "push_targets", ["channel_id"])
    op.create_table(
        "recordings",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.BigInteger(), nullable=True),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False),
        sa.Column("end_reason", sa.String(length=128), nullable=True),
        sa.CheckConstraint(
            "status IN ('recording', 'complete', 'failed')", name=op.f("ck_recordings_status")
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_recordings_channel_id_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recordings")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_recordings_channel_id"), "recordings", ["channel_id"])
    op.create_index(op.f("ix_recordings_started_at"), "recordings", ["started_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_recordings_started_at"), table_name="recordings")
    op.drop_index(op.f("ix_recordings_channel_id"), table_name="recordings")
    op.drop_table("recordings")
    op.drop_index(op.f("ix_push_targets_channel_id"), table_name="push_targets")
    op.drop_table("push_targets")
    op.drop_column("channels", "record")
