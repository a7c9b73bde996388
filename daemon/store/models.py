"""SQLAlchemy 2 typed models: tickets, timeline, attachments, outbox, dedupe state."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column, relationship

from daemon.addresses import address_key


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as UTC; always comes back timezone-aware (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Ticket(Base):
    """One complaint case (SPEC §5)."""

    __tablename__ = "tickets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(32), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    channel: Mapped[str] = mapped_column(String(16))
    category: Mapped[str] = mapped_column(String(32), default="other")
    priority: Mapped[str] = mapped_column(String(8), default="normal")
    language: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str] = mapped_column(Text, default="")
    complainant_name: Mapped[str | None] = mapped_column(String(200))
    complainant_email: Mapped[str] = mapped_column(String(320), index=True)
    complainant_phone: Mapped[str | None] = mapped_column(String(64))
    respondent: Mapped[str | None] = mapped_column(String(300))
    # the respondent's name normalised (handlers/register.normalise_respondent): group complaints
    respondent_key: Mapped[str | None] = mapped_column(String(300))
    assignee: Mapped[str | None] = mapped_column(String(320), index=True)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(64))
    reply_token: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_response_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reopened_count: Mapped[int] = mapped_column(Integer, default=0)
    due_first_response: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    due_acceptance: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    due_resolution: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    satisfaction_score: Mapped[int | None] = mapped_column(Integer)
    satisfaction_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    satisfaction_comment: Mapped[str | None] = mapped_column(Text)
    # satisfied | neutral | dissatisfied | no_answer (handlers/survey.py)
    satisfaction_outcome: Mapped[str | None] = mapped_column(String(16))
    needs_review: Mapped[bool] = mapped_column(
        default=False, server_default=false()
    )  # a neutral answer, for the digest
    # SLA (handlers/sla.py): when `waiting` began (the clocks are paused until it ends), and
    # the earliest moment the escalation sweep has something to do for this case.
    sla_paused_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sla_next_check_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    # Survey (handlers/survey.py): when it is due, when sent, its token, when silence closes.
    survey_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    survey_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    survey_token: Mapped[str | None] = mapped_column(String(32), unique=True)
    survey_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # When its personal data was erased (handlers/privacy.py): on request, or by retention.
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    timeline: Mapped[list[TimelineEntry]] = relationship(
        back_populates="ticket", order_by="TimelineEntry.id", cascade="all, delete-orphan"
    )

    # group complaints: complainants against one respondent within a window (handlers/classify)
    __table_args__ = (Index("ix_tickets_respondent_created", "respondent_key", "created_at"),)


class TimelineEntry(Base):
    """One thing that happened on a case: a message in or out, a status change, a note."""

    __tablename__ = "timeline_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(16))  # message_in|message_out|status|note|...
    actor: Mapped[str] = mapped_column(String(320))
    direction: Mapped[str | None] = mapped_column(String(3))  # in | out | None
    # Every Message-ID we sent or received, once: threading and duplicate detection.
    message_id: Mapped[str | None] = mapped_column(String(998), unique=True)
    subject: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    raw_sha256: Mapped[str | None] = mapped_column(String(64))  # see source_items.raw
    internal: Mapped[bool] = mapped_column(default=False)  # staff-only (auto mail, third party)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    ticket: Mapped[Ticket] = relationship(back_populates="timeline")
    attachments: Mapped[list[Attachment]] = relationship(
        back_populates="entry", order_by="Attachment.id", cascade="all, delete-orphan"
    )

    __table_args__ = (Index("ix_timeline_ticket", "ticket_id", "id"),)


class Attachment(Base):
    """A file that came with a message; its bytes live content-addressed under the data folder."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    entry_id: Mapped[int] = mapped_column(
        ForeignKey("timeline_entries.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))  # display only, never a path
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)

    entry: Mapped[TimelineEntry] = relationship(back_populates="attachments")


def _recipient(context: Any) -> str:
    """The recipient of the outbox row being inserted (for its key columns' defaults)."""
    return str(context.get_current_parameters().get("recipient") or "")


class OutboxMessage(Base):
    """A mail to send, rendered in full when queued; the sender delivers it after commit."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int | None] = mapped_column(
        ForeignKey("tickets.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[str] = mapped_column(String(32))  # ack | reply | status | ...
    intent: Mapped[str] = mapped_column(String(200), unique=True)  # at most one mail per intent
    status: Mapped[str] = mapped_column(String(8), default="queued")  # queued|sent|failed
    recipient: Mapped[str] = mapped_column(String(320), index=True)
    # The recipient's mailbox (daemon/addresses.address_key): what rate limits count by
    recipient_key: Mapped[str | None] = mapped_column(
        String(320), index=True, default=lambda ctx: address_key(_recipient(ctx))
    )
    recipient_domain: Mapped[str | None] = mapped_column(  # acks per domain
        String(255), default=lambda ctx: address_key(_recipient(ctx)).rpartition("@")[2] or None
    )
    message_id: Mapped[str] = mapped_column(String(998))
    subject: Mapped[str] = mapped_column(Text)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    automatic: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The instance delivering it, until when (daemon/store/coordination.claim_outbox): no row
    # is sent by two instances; a crashed holder's claim lapses and another sends it.
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Scheduled mail to a consumer: sent within [delivery] consumer_hours only (daemon/sender.py)
    consumer_hours: Mapped[bool] = mapped_column(default=False, server_default=false())

    __table_args__ = (
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_domain_created", "recipient_domain", "created_at"),
    )


class StaffToken(Base):
    """The address token one staff member got for one case: their proof when acting by mail."""

    __tablename__ = "staff_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(320))
    token: Mapped[str] = mapped_column(String(32), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("ticket_id", "address", name="uq_staff_tokens_case"),)


class EscalationStep(Base):
    """One rung of the escalation ladder taken for one case and one deadline, exactly once."""

    __tablename__ = "escalation_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"))
    clock: Mapped[str] = mapped_column(String(16))  # first_response | acceptance | resolution
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)  # a recomputed deadline starts anew
    step: Mapped[str] = mapped_column(String(32))  # remind | level1 | level2 | daily:YYYY-MM-DD
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    in_digest_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # reported to supervisors

    __table_args__ = (
        UniqueConstraint("ticket_id", "clock", "deadline", "step", name="uq_escalation_once"),
        Index("ix_escalation_steps_at", "at"),
    )


class DigestRun(Base):
    """One supervisor digest schedule slot, taken once across restarts and instances."""

    __tablename__ = "digest_runs"

    slot: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent: Mapped[int] = mapped_column(Integer, default=0)  # digests queued (0: nothing to say)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class SourceItem(Base):
    """Per-source dedupe state: an item key seen once, and what became of it."""

    __tablename__ = "source_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(500))
    outcome: Mapped[str] = mapped_column(String(16))  # ticket | entry | duplicate | quarantined
    ticket_id: Mapped[int | None] = mapped_column(ForeignKey("tickets.id", ondelete="SET NULL"))
    reason: Mapped[str | None] = mapped_column(Text)
    raw_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)  # the message exactly as received
    at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("source", "key", name="uq_source_items_source_key"),)


class TicketCounter(Base):
    """The last number issued per prefix and local day; bumped atomically in the database."""

    __tablename__ = "ticket_counters"

    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    value: Mapped[int] = mapped_column(Integer)


class SourceState(Base):
    """What each source last did, for `caseloop status` (and IMAP UIDVALIDITY/UID later)."""

    __tablename__ = "source_state"

    source: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Lease(Base):
    """Who works something that one instance at a time may work (a mailbox, a form folder, a
    job), until when. A holder renews it while alive; an expired lease may be taken over."""

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # source:<name> | job:<name>
    holder: Mapped[str | None] = mapped_column(String(200))  # an instance id; None: free
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    taken_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Instance(Base):
    """A running caseloop instance (`run`, `run --once`): alive while its heartbeat is fresh."""

    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host:pid:random
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(16))  # run | once
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


# Mappers are set up now, not at the first query: intake builds unattached Ticket copies
# (handlers/intake.open_ticket) that need the mapping before anything has been queried.
configure_mappers()
