"""api_tokens.form_key: the token-creation form, sent again, makes no second token

Revision ID: 0007_token_form_key
Revises: 0006_mail_outbox
Create Date: 2026-11-25 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_token_form_key"
down_revision: str | None = "0006_mail_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("form_key", sa.String(length=43), nullable=True))
    op.create_index(
        "uq_api_tokens_user_id_form_key", "api_tokens", ["user_id", "form_key"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_api_tokens_user_id_form_key", table_name="api_tokens")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("form_key")
