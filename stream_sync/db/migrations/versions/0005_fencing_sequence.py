"""Fencing tokens from a PostgreSQL sequence instead of a counter row.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06

Every admission takes a token. From the counter row that meant a row lock held
until the commit, across a busy event loop, so a storm of admissions queued on it
one by one. nextval() takes no lock that lasts. The sequence starts above the
counter's value; SQLite keeps the counter row (it has one writer anyway).
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE SEQUENCE fencing_tokens AS bigint START WITH 1 MINVALUE 1")
    op.execute(
        "SELECT setval('fencing_tokens', value) FROM counters WHERE name = 'fencing' AND value > 0"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        "UPDATE counters SET value = (SELECT last_value FROM fencing_tokens)"
        " WHERE name = 'fencing' AND (SELECT is_called FROM fencing_tokens)"
    )
    op.execute("DROP SEQUENCE fencing_tokens")
