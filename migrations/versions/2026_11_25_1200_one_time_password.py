"""users.password_must_change, users.password_expires_at: an administrator's password reset

Revision ID: 0008_one_time_password
Revises: 0007_token_form_key
Create Date: 2026-11-25 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from regenspine.db import UTCDateTime

revision: str = "0008_one_time_password"
down_revision: str | None = "0007_token_form_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column(
                "password_must_change", sa.Boolean(), nullable=False, server_default=sa.false()
            )
        )
        batch.add_column(sa.Column("password_expires_at", UTCDateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("password_expires_at")
        batch.drop_column("password_must_change")
