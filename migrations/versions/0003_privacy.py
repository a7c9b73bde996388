"""privacy: when a case's personal data was erased; SQLite times in one text form

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        _whole_seconds_as_core_writes_them(bind)


def _whole_seconds_as_core_writes_them(bind: sa.Connection) -> None:
    """Until 0003 the intake's fast path stored a whole-second time as "2026-11-24 02:00:00"
    where SQLAlchemy writes "2026-11-24 02:00:00.000000"; SQLite compares them as text, so the
    same moment did not compare equal. Give every such value the one form."""
    inspector = sa.inspect(bind)
    for table in inspector.get_table_names():
        for column in inspector.get_columns(table):
            if isinstance(column["type"], sa.DateTime):
                name = column["name"]
                bind.execute(
                    sa.text(
                        f'UPDATE "{table}" SET "{name}" = "{name}" || \'.000000\' '
                        f'WHERE length("{name}") = 19'
                    )
                )


def downgrade() -> None:
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("erased_at")
