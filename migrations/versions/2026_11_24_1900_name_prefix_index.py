"""patients: the name indexes answer prefix searches on PostgreSQL too

On PostgreSQL, `LIKE 'abc%'` can use a B-tree index only with the C collation or a pattern
operator class; the database's default collation is usually neither, so name search scanned
the table. SQLite searches a range of its plain index and needs no change.

Revision ID: 0004_name_prefix_index
Revises: 0003_totp_last_step
Create Date: 2026-11-24 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004_name_prefix_index"
down_revision: str | None = "0003_totp_last_step"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("family_name_norm", "given_name_norm")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in COLUMNS:
        op.drop_index(f"ix_patients_{column}", table_name="patients")
        op.create_index(
            f"ix_patients_{column}",
            "patients",
            [column],
            postgresql_ops={column: "varchar_pattern_ops"},
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column in COLUMNS:
        op.drop_index(f"ix_patients_{column}", table_name="patients")
        op.create_index(f"ix_patients_{column}", "patients", [column])
