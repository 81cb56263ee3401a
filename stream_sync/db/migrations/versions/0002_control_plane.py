"""Accounts, sessions, API tokens, ingest servers, publish sessions, audit log; key expiry.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24

Written by hand to match stream_sync/db/models.py; tests/unit/db compares the two.
The audit log is append-only in the database itself: a trigger refuses UPDATE
(except the SET NULL of a deleted user or channel).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reset_token_hash", sa.LargeBinary(), nullable=True),
        sa.Column("reset_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN ('admin', 'streamer')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
    )
    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_address", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_auth_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_auth_sessions_token_hash")),
    )
    op.create_index(op.f("ix_auth_sessions_user_id"), "auth_sessions", ["user_id"])
    op.create_index(op.f("ix_auth_sessions_expires_at"), "auth_sessions", ["expires_at"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_api_tokens_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_id", name=op.f("uq_api_tokens_token_id")),
    )
    op.create_index(op.f("ix_api_tokens_user_id"), "api_tokens", ["user_id"])
    op.create_table(
        "ingest_servers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("rtmp_url", sa.String(length=255), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=True),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("draining", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("capacity >= 0", name=op.f("ck_ingest_servers_capacity")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_servers")),
        sa.UniqueConstraint("name", name=op.f("uq_ingest_servers_name")),
    )
    with op.batch_alter_table("channels") as batch:
        batch.add_column(sa.Column("owner_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("ingest_server_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_channels_owner_id_users"), "users", ["owner_id"], ["id"], ondelete="SET NULL"
        )
        batch.create_foreign_key(
            op.f("fk_channels_ingest_server_id_ingest_servers"),
            "ingest_servers",
            ["ingest_server_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(op.f("ix_channels_owner_id"), ["owner_id"])
        batch.create_index(op.f("ix_channels_ingest_server_id"), ["ingest_server_id"])
    with op.batch_alter_table("stream_keys") as batch:
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.drop_index("uq_stream_keys_channel_id_active")
    op.create_index(
        op.f("uq_stream_keys_channel_id_current"),
        "stream_keys",
        ["channel_id"],
        unique=True,
        sqlite_where=sa.text("revoked_at IS NULL AND expires_at IS NULL"),
        postgresql_where=sa.text("revoked_at IS NULL AND expires_at IS NULL"),
    )
    op.create_table(
        "publish_sessions",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("remote_address", sa.String(length=64), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=128), nullable=True),
        sa.Column("media_bytes", sa.BigInteger(), nullable=False),
        sa.Column("video_frames", sa.BigInteger(), nullable=False),
        sa.Column("audio_frames", sa.BigInteger(), nullable=False),
        sa.Column("video_codec", sa.String(length=16), nullable=True),
        sa.Column("audio_codec", sa.String(length=16), nullable=True),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_publish_sessions_channel_id_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_publish_sessions")),
    )
    op.create_index(op.f("ix_publish_sessions_channel_id"), "publish_sessions", ["channel_id"])
    op.create_index(op.f("ix_publish_sessions_started_at"), "publish_sessions", ["started_at"])
    op.create_table(
        "audit_log",
        sa.Column("id", _BIG_ID, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=254), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=True),
        sa.Column("key_id", sa.String(length=32), nullable=True),
        sa.Column("source_address", sa.String(length=64), nullable=True),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_user_id"],
            ["users.id"],
            name=op.f("fk_audit_log_actor_user_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_audit_log_channel_id_channels"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index(op.f("ix_audit_log_actor_user_id"), "audit_log", ["actor_user_id"])
    op.create_index(op.f("ix_audit_log_channel_id"), "audit_log", ["channel_id"])
    _create_append_only_trigger()


def _dialect() -> str:
    # get_context() works offline (``alembic upgrade --sql``) too; get_bind() does not.
    return op.get_context().dialect.name


def _nulled_or_same(column: str, parent: str, same: str) -> str:
    """Unchanged, or set NULL because the referenced row no longer exists."""
    gone = f"NOT EXISTS (SELECT 1 FROM {parent} WHERE {parent}.id = OLD.{column})"  # noqa: S608
    return f"(NEW.{column} {same} OLD.{column} OR (NEW.{column} IS NULL AND {gone}))"


def _create_append_only_trigger() -> None:
    """UPDATE on audit_log is refused by the database; deletes remain for retention.

    A foreign key's ON DELETE SET NULL is an update too, so the trigger lets exactly
    that through: a change that only nulls actor_user_id or channel_id, and only
    once the row they pointed at is gone. Every other column must stay the same
    (compared NULL-safely; json has no equality operator in PostgreSQL, so as text).
    """
    postgresql = _dialect() == "postgresql"
    same = "IS NOT DISTINCT FROM" if postgresql else "IS"
    as_text = "::text" if postgresql else ""
    unchanged = " AND ".join(
        [
            *(f"NEW.{c} = OLD.{c}" for c in ("id", "at", "action", "actor", "count")),
            *(f"NEW.{c} {same} OLD.{c}" for c in ("key_id", "source_address")),
            f"NEW.details{as_text} {same} OLD.details{as_text}",
            *(
                _nulled_or_same(column, parent, same)
                for column, parent in (("actor_user_id", "users"), ("channel_id", "channels"))
            ),
        ]
    )
    if postgresql:
        op.execute(
            "CREATE FUNCTION audit_log_append_only() RETURNS trigger AS $$ BEGIN "
            f"IF {unchanged} THEN RETURN NEW; END IF; "
            "RAISE EXCEPTION 'audit_log is append-only'; END; $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log "
            "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()"
        )
    else:
        op.execute(
            "CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log "
            f"WHEN NOT ({unchanged}) "
            "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
        )


def downgrade() -> None:
    postgresql = _dialect() == "postgresql"
    op.execute(
        "DROP TRIGGER IF EXISTS audit_log_append_only" + (" ON audit_log" if postgresql else "")
    )
    if postgresql:
        op.execute("DROP FUNCTION IF EXISTS audit_log_append_only()")
    op.drop_table("audit_log")
    op.drop_table("publish_sessions")
    op.drop_index(op.f("uq_stream_keys_channel_id_current"), table_name="stream_keys")
    # 0001 allows one unrevoked key per channel: a rotated-out key still in its
    # overlap would make the old index impossible to build, so it ends now.
    op.execute(
        "UPDATE stream_keys SET revoked_at = expires_at "
        "WHERE revoked_at IS NULL AND expires_at IS NOT NULL"
    )
    with op.batch_alter_table("stream_keys") as batch:
        batch.drop_column("expires_at")
        batch.create_index(
            "uq_stream_keys_channel_id_active",
            ["channel_id"],
            unique=True,
            sqlite_where=sa.text("revoked_at IS NULL"),
            postgresql_where=sa.text("revoked_at IS NULL"),
        )
    with op.batch_alter_table("channels") as batch:
        batch.drop_index(op.f("ix_channels_ingest_server_id"))
        batch.drop_index(op.f("ix_channels_owner_id"))
        batch.drop_constraint(
            op.f("fk_channels_ingest_server_id_ingest_servers"), type_="foreignkey"
        )
        batch.drop_constraint(op.f("fk_channels_owner_id_users"), type_="foreignkey")
        batch.drop_column("ingest_server_id")
        batch.drop_column("owner_id")
    op.drop_table("ingest_servers")
    op.drop_index(op.f("ix_api_tokens_user_id"), table_name="api_tokens")
    op.drop_table("api_tokens")
    op.drop_index(op.f("ix_auth_sessions_expires_at"), table_name="auth_sessions")
    op.drop_index(op.f("ix_auth_sessions_user_id"), table_name="auth_sessions")
    op.drop_table("auth_sessions")
    op.drop_table("users")
