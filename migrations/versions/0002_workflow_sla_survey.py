"""workflow, SLA escalation, digest and survey state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "digest_runs",
        sa.Column("slot", sa.DateTime(timezone=True), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("slot"),
    )
    op.create_table(
        "escalation_steps",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("clock", sa.String(length=16), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("in_digest_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id", "clock", "deadline", "step", name="uq_escalation_once"),
    )
    with op.batch_alter_table("escalation_steps", schema=None) as batch_op:
        batch_op.create_index("ix_escalation_steps_at", ["at"], unique=False)

    op.create_table(
        "staff_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ticket_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["ticket_id"], ["tickets.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("ticket_id", "address", name="uq_staff_tokens_case"),
        sa.UniqueConstraint("token"),
    )
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.add_column(sa.Column("respondent_key", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("satisfaction_outcome", sa.String(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("needs_review", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("sla_paused_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(
            sa.Column("sla_next_check_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("survey_due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("survey_sent_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("survey_token", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("survey_expires_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.create_index(
            batch_op.f("ix_tickets_sla_next_check_at"), ["sla_next_check_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_tickets_survey_due_at"), ["survey_due_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_tickets_survey_expires_at"), ["survey_expires_at"], unique=False
        )
        batch_op.create_unique_constraint("uq_tickets_survey_token", ["survey_token"])
        batch_op.create_index(
            "ix_tickets_respondent_created", ["respondent_key", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("tickets", schema=None) as batch_op:
        batch_op.drop_constraint("uq_tickets_survey_token", type_="unique")
        batch_op.drop_index("ix_tickets_respondent_created")
        batch_op.drop_index(batch_op.f("ix_tickets_survey_expires_at"))
        batch_op.drop_index(batch_op.f("ix_tickets_survey_due_at"))
        batch_op.drop_index(batch_op.f("ix_tickets_sla_next_check_at"))
        batch_op.drop_column("survey_expires_at")
        batch_op.drop_column("survey_token")
        batch_op.drop_column("survey_sent_at")
        batch_op.drop_column("survey_due_at")
        batch_op.drop_column("sla_next_check_at")
        batch_op.drop_column("sla_paused_at")
        batch_op.drop_column("needs_review")
        batch_op.drop_column("satisfaction_outcome")
        batch_op.drop_column("respondent_key")

    op.drop_table("staff_tokens")
    with op.batch_alter_table("escalation_steps", schema=None) as batch_op:
        batch_op.drop_index("ix_escalation_steps_at")

    op.drop_table("escalation_steps")
    op.drop_table("digest_runs")
