"""outbox.recipient_key: automatic mail counted per mailbox (plus-addresses and case folded)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("recipient_key", sa.String(length=320), nullable=True))
    # Rows already queued count by their lower-cased address (new rows fold sub-addresses too).
    op.execute("UPDATE outbox SET recipient_key = lower(recipient)")
    op.create_index("ix_outbox_recipient_key", "outbox", ["recipient_key"])


def downgrade() -> None:
    op.drop_index("ix_outbox_recipient_key", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("recipient_key")
