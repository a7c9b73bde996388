"""Registration: parse, drop duplicates, open a numbered case or add the message to its case."""

from __future__ import annotations

import re
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.store.models import Attachment, Ticket, TicketCounter, TimelineEntry
from handlers.parse import ParseError, parse_message
from handlers.pipeline import Context


class Parse:
    name = "parse"
    description = "bytes -> parsed message; oversized or unparseable mail is quarantined"

    def process(self, ctx: Context) -> None:
        raw = ctx.item.raw
        limit = ctx.config.intake.max_message_size
        if len(raw) > limit:
            ctx.stop("quarantined", f"message is {len(raw)} bytes, over max_message_size {limit}")
            return
        try:
            ctx.message = parse_message(raw)
        except ParseError as exc:
            ctx.stop("quarantined", str(exc))
            return
        ctx.raw_sha256 = ctx.blobs.put(raw)


class Deduplicate:
    name = "deduplicate"
    description = "the same Message-ID delivered twice (two aliases, a resend) is taken in once"

    def process(self, ctx: Context) -> None:
        assert ctx.message is not None
        message_id = ctx.message.message_id
        if message_id is None:
            return
        ticket_id = ctx.session.scalar(
            select(TimelineEntry.ticket_id).where(TimelineEntry.message_id == message_id)
        )
        if ticket_id is not None:
            ctx.ticket = ctx.session.get(Ticket, ticket_id)
            ctx.stop("duplicate", f"Message-ID {message_id} already taken in")


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def detect_language(text: str, default: str) -> str:
    """zh-CN or en from the consumer's own words (a name or an order code does not decide)."""
    sample = text[:4000]
    cjk = len(_CJK.findall(sample))
    words = len(_LATIN_WORD.findall(sample))
    if cjk >= 2 and cjk >= words:
        return "zh-CN"
    if words >= 3 and cjk < words:
        return "en"
    return default


def next_number(session: Session, config: Config, now: datetime) -> str:
    """PREFIX-YYYYMMDD-NNNN by local date, from a counter row the database bumps atomically."""
    prefix = config.tickets.number_prefix
    day = now.astimezone(config.timezone).date()
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    upsert = (
        insert(TicketCounter)
        .values(prefix=prefix, day=day, value=1)
        .on_conflict_do_update(
            index_elements=[TicketCounter.prefix, TicketCounter.day],
            set_={"value": TicketCounter.value + 1},
        )
        .returning(TicketCounter.value)
    )
    value = session.execute(upsert).scalar_one()
    return f"{prefix}-{day:%Y%m%d}-{value:04d}"


def open_ticket(
    ctx: Context, *, channel: str, email: str, name: str | None, subject: str, language: str
) -> Ticket:
    """A new case in `received`, numbered, with its SLA due times."""
    now = ctx.now
    policy = ctx.config.sla.policy("normal")
    ticket = Ticket(
        number=next_number(ctx.session, ctx.config, now),
        status="received",
        channel=channel,
        category="other",
        priority="normal",
        language=language,
        subject=subject,
        complainant_name=name or None,
        complainant_email=email,
        source=ctx.item.source,
        reply_token=secrets.token_hex(8),
        created_at=now,
        updated_at=now,
        escalation_level=0,
        reopened_count=0,
        extra={},
        due_first_response=ctx.calendar.add(now, policy.first_response),
        due_acceptance=ctx.calendar.add(now, policy.acceptance),
    )
    ctx.session.add(ticket)
    ctx.session.flush()
    return ticket


class OpenOrThread:
    name = "open-or-thread"
    description = "open a case for new mail, or add the mail to the case it belongs to"

    def process(self, ctx: Context) -> None:
        msg = ctx.message
        assert msg is not None
        sender = msg.from_address.lower()
        if ctx.ticket is None:
            if ctx.automatic:
                ctx.stop("ignored", f"{ctx.automatic}; matches no case")
                return
            language = detect_language(
                f"{msg.subject}\n{msg.text}", ctx.config.tickets.default_language
            )
            ctx.ticket = open_ticket(
                ctx,
                channel="email",
                email=sender,
                name=msg.from_name,
                subject=msg.subject,
                language=language,
            )
            ctx.new_ticket = True
        ticket = ctx.ticket
        # Only the complainant speaks for the case; robots and third parties are for staff.
        internal = bool(ctx.automatic) or sender != ticket.complainant_email
        entry = TimelineEntry(
            ticket_id=ticket.id,
            at=ctx.now,
            kind="message_in",
            actor=sender,
            direction="in",
            message_id=msg.message_id,
            subject=msg.subject,
            text=msg.text,
            raw_sha256=ctx.raw_sha256,
            internal=internal,
            data={"automatic": ctx.automatic} if ctx.automatic else {},
        )
        for part in msg.attachments:
            if len(part.payload) > ctx.config.intake.max_attachment_size:
                ctx.notes.append(f"attachment {part.filename!r} over max_attachment_size, not kept")
                continue
            entry.attachments.append(
                Attachment(
                    filename=part.filename,
                    content_type=part.content_type,
                    size=len(part.payload),
                    sha256=ctx.blobs.put(part.payload),
                )
            )
        ctx.session.add(entry)
        ticket.updated_at = ctx.now
        ctx.entry = entry
