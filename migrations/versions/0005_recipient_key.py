"""outbox.recipient_key, recipient_domain: automatic mail counted per mailbox (plus-addresses
and case folded) and acknowledgements per domain

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
        batch.add_column(sa.Column("recipient_domain", sa.String(length=255), nullable=True))
    # Rows already queued count by their lower-cased address (new rows fold sub-addresses too);
    # their domain is left unknown: a burst is counted over the last hour only.
    op.execute("UPDATE outbox SET recipient_key = lower(recipient)")
    op.create_index("ix_outbox_recipient_key", "outbox", ["recipient_key"])
    op.create_index("ix_outbox_domain_created", "outbox", ["recipient_domain", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_domain_created", table_name="outbox")
    op.drop_index("ix_outbox_recipient_key", table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("recipient_domain")
        batch.drop_column("recipient_key")
