"""Several nodes on one database: event outbox, per-channel sequence, fencing, database locks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Written by hand to match stream_sync/db/models.py; tests/unit/db compares the two.

On SQLite, ``channels`` is rebuilt with AUTOINCREMENT so a deleted channel's id is
never handed out again (events are told apart by channel id and per-channel
sequence). SQLite reflection does not see AUTOINCREMENT: any later batch rebuild of
``channels`` or ``event_outbox`` must pass ``table_kwargs={"sqlite_autoincrement":
True}`` or it silently drops it (a test checks it is there at head).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def upgrade() -> None:
    if _sqlite():
        # The audit_log trigger names channels; a modern RENAME checks triggers and
        # fails while the old table is gone. The legacy rename leaves their text alone,
        # which is right: the rebuilt table has the same name.
        op.execute("PRAGMA legacy_alter_table=ON")
        with op.batch_alter_table(
            "channels", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ) as batch:
            batch.add_column(
                sa.Column("event_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
            )
        op.execute("PRAGMA legacy_alter_table=OFF")
    else:
        op.add_column(
            "channels",
            sa.Column("event_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        )
    op.add_column("publish_sessions", sa.Column("fencing_token", sa.BigInteger(), nullable=True))
    op.create_table(
        "event_outbox",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("node", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_event_outbox_channel_id_channels"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_outbox")),
        sa.UniqueConstraint("channel_id", "seq", name=op.f("uq_event_outbox_channel_id")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_event_outbox_created_at"), "event_outbox", ["created_at"])
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_counters")),
    )
    op.bulk_insert(counters, [{"name": "fencing", "value": 0}])
    op.create_table(
        "publish_locks",
        sa.Column("channel_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("renewed_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_publish_locks_channel_id_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("channel_id", name=op.f("pk_publish_locks")),
    )
    op.create_table(
        "consumer_cursors",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_consumer_cursors")),
    )


def downgrade() -> None:
    op.drop_table("consumer_cursors")
    op.drop_table("publish_locks")
    op.drop_table("counters")
    op.drop_index(op.f("ix_event_outbox_created_at"), table_name="event_outbox")
    op.drop_table("event_outbox")
    with op.batch_alter_table("publish_sessions") as batch:
        batch.drop_column("fencing_token")
    # Rebuilt without AUTOINCREMENT on SQLite, as 0002 left it.
    if _sqlite():
        op.execute("PRAGMA legacy_alter_table=ON")
    with op.batch_alter_table("channels", recreate="always" if _sqlite() else "auto") as batch:
        batch.drop_column("event_seq")
    if _sqlite():
        op.execute("PRAGMA legacy_alter_table=OFF")
