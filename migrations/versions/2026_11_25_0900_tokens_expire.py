"""api_tokens.expires_at is required: every API token expires

A token made before this revision without an expiry now expires 366 days after it was made,
the longest a new token may be valid.

Revision ID: 0005_tokens_expire
Revises: 0004_name_prefix_index
Create Date: 2026-11-25 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from alembic import op

from regenspine.db import UTCDateTime

revision: str = "0005_tokens_expire"
down_revision: str | None = "0004_name_prefix_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

tokens = sa.table(
    "api_tokens",
    sa.column("id", sa.Integer()),
    sa.column("created_at", UTCDateTime(timezone=True)),
    sa.column("expires_at", UTCDateTime(timezone=True)),
)


def upgrade() -> None:
    bind = op.get_bind()
    unlimited = bind.execute(
        sa.select(tokens.c.id, tokens.c.created_at).where(tokens.c.expires_at.is_(None))
    ).all()
    for token_id, created_at in unlimited:
        bind.execute(
            tokens.update()
            .where(tokens.c.id == token_id)
            .values(expires_at=created_at + timedelta(days=366))
        )
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("expires_at", existing_type=UTCDateTime(timezone=True), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.alter_column("expires_at", existing_type=UTCDateTime(timezone=True), nullable=True)
