"""Sessions that span reconnects: status machine state, grace, aggregates; channel settings.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24

Written by hand to match stream_sync/db/models.py; tests/unit/db compares the two.
Plain ADD COLUMN on both engines (no batch rebuild), so SQLite's AUTOINCREMENT on
channels survives. Before the one-open-session-per-channel index is created, older
open rows beyond the newest per channel are closed.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SESSION_COLUMNS: list[sa.Column[Any]] = [
    sa.Column("status", sa.String(length=16), server_default="offline", nullable=False),
    sa.Column("test", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    sa.Column("publishing", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    sa.Column("media", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    sa.Column("grace_until", sa.Float(), nullable=True),
    sa.Column("pending_reason", sa.String(length=32), nullable=True),
    sa.Column("status_since", sa.Float(), server_default=sa.text("0"), nullable=False),
    sa.Column("publishes", sa.Integer(), server_default=sa.text("0"), nullable=False),
    sa.Column("encoder", sa.String(length=128), nullable=True),
    sa.Column("width", sa.Integer(), nullable=True),
    sa.Column("height", sa.Integer(), nullable=True),
    sa.Column("fps", sa.Float(), nullable=True),
    sa.Column("avg_kbps", sa.Float(), nullable=True),
    sa.Column("peak_kbps", sa.Float(), nullable=True),
    sa.Column("health_issues", sa.JSON(), nullable=True),
    sa.Column("last_update_at", sa.DateTime(timezone=True), nullable=True),
]


def upgrade() -> None:
    op.add_column("channels", sa.Column("grace_seconds", sa.Integer(), nullable=True))
    op.add_column(
        "channels",
        sa.Column("test_mode", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    for column in _SESSION_COLUMNS:
        op.add_column("publish_sessions", column)
    op.execute(
        "UPDATE publish_sessions SET ended_at = started_at, end_reason = 'superseded' "
        "WHERE ended_at IS NULL AND id NOT IN ("
        "SELECT max(id) FROM publish_sessions WHERE ended_at IS NULL GROUP BY channel_id)"
    )
    op.execute(
        "UPDATE publish_sessions SET status = 'live', publishing = true, media = true, "
        "publishes = 1 WHERE ended_at IS NULL"
    )
    op.create_index(
        op.f("uq_publish_sessions_channel_id_open"),
        "publish_sessions",
        ["channel_id"],
        unique=True,
        sqlite_where=sa.text("ended_at IS NULL"),
        postgresql_where=sa.text("ended_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index(op.f("uq_publish_sessions_channel_id_open"), table_name="publish_sessions")
    for column in reversed(_SESSION_COLUMNS):
        op.drop_column("publish_sessions", column.name)
    op.drop_column("channels", "test_mode")
    op.drop_column("channels", "grace_seconds")
