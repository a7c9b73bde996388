"""Intake's deciding steps: drop duplicates, open a numbered case or add the message to its case."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.util import identity_key

from daemon.config import Config
from daemon.store import writes
from daemon.store.models import Ticket, TimelineEntry
from handlers import sla
from handlers.authresults import domain_results
from handlers.context import Context
from handlers.register import merge_reply, normalise_respondent
from handlers.workflow import consumer_replied


class Deduplicate:
    name = "deduplicate"
    description = (
        "the same Message-ID delivered twice (two aliases, a resend) is taken in once; a "
        "different message under a Message-ID we hold is a message of its own"
    )

    def process(self, ctx: Context) -> None:
        message = ctx.message
        if message.message_id is None:
            return
        ticket_id = writes.case_of_message(ctx.session, message.message_id)
        if ticket_id is None:
            return
        if not self._same(ctx, message.message_id):
            # Broken clients, resends of a template and attackers reuse Message-IDs: Bob's
            # complaint under Alice's id is Bob's. It is taken in under an id of our own
            # making, the same for the same content, so its own resend is still one entry.
            alias = _alias(message.message_id, self._content(ctx))
            ctx.prep.notes.append(
                f"{ctx.prep.item.label}: Message-ID {message.message_id[:200]} already taken "
                "in with other content: registered as a message of its own"
            )
            ticket_id = writes.case_of_message(ctx.session, alias)
            if ticket_id is None:
                ctx.prep.message = replace(message, message_id=alias)
                return
        ctx.ticket = ctx.session.get(Ticket, ticket_id)
        ctx.stop("duplicate", f"Message-ID {message.message_id[:200]} already taken in")

    @staticmethod
    def _content(ctx: Context) -> tuple[str, str, str]:
        msg = ctx.message
        return msg.from_address.lower(), msg.subject, ctx.prep.new_text or msg.text

    def _same(self, ctx: Context, message_id: str) -> bool:
        held = writes.content_of_message(ctx.session, message_id)
        if held is None:
            return True
        actor, subject, text, raw_sha256 = held
        if raw_sha256 is not None and raw_sha256 == ctx.prep.raw_sha256:
            return True
        if text is None and subject is None:  # erased, or one of ours: nothing to tell apart
            return actor == self._content(ctx)[0]
        return (actor, subject, text) == self._content(ctx)


def _alias(message_id: str, content: tuple[str, str, str]) -> str:
    """<digest.original-id>: a Message-ID for a different message under a taken one."""
    digest = hashlib.sha256("\x00".join(content).encode("utf-8", "replace")).hexdigest()[:20]
    return f"<{digest}.{message_id.strip('<>')}"[:997] + ">"


def next_number(session: Session, config: Config, now: datetime) -> str:
    """PREFIX-YYYYMMDD-NNNN by local date, from a counter row the database bumps atomically."""
    prefix = config.tickets.number_prefix
    day = now.astimezone(config.timezone).date()
    return f"{prefix}-{day:%Y%m%d}-{writes.bump_counter(session, prefix, day):04d}"


def open_ticket(ctx: Context, *, email: str, name: str | None, subject: str) -> Ticket:
    """A new case in `received`, numbered, with its SLA due times.

    Inserted through the store's write API (the hot path); the returned Ticket is a plain,
    unattached copy of the row for the steps after this one.
    """
    now, prep = ctx.now, ctx.prep
    priority = ctx.opening.get("priority", prep.priority)
    values: dict[str, Any] = dict(
        number=next_number(ctx.session, ctx.config, now),
        status="received",
        channel=prep.channel,
        category=prep.category,
        priority=priority,
        language=prep.language,
        subject=subject,
        complainant_name=name or None,
        complainant_email=email,
        complainant_phone=prep.fields.get("phone"),
        respondent=prep.fields.get("respondent"),
        respondent_key=normalise_respondent(prep.fields["respondent"])
        if prep.fields.get("respondent")
        else None,
        assignee=None,
        source=prep.item.source,
        reply_token=secrets.token_hex(8),
        created_at=now,
        updated_at=now,
        escalation_level=0,
        reopened_count=0,
        needs_review=False,
        extra={
            **{k: v for k, v in prep.fields.items() if k not in ("phone", "respondent", "name")},
            **ctx.opening.get("extra", {}),
            **({"classified_by": prep.classified_by} if prep.classified_by else {}),
        },
        # An imported case's deadlines passed long ago: no clocks run until staff move it.
        **(dict.fromkeys(_DUE_COLUMNS) if prep.backfill else _initial_dues(ctx, priority)),
    )
    values["id"] = writes.open_case(ctx.session, **values)
    # Filled in as loaded values, not set one by one: the ORM's per-attribute events cost
    # more than the INSERT.
    ticket = cast(Ticket, _TICKETS.new_instance())
    ticket.__dict__.update(values)
    return ticket


_TICKETS = Ticket.__mapper__.class_manager


_DUE_COLUMNS = ("due_first_response", "due_acceptance", "due_resolution", "sla_next_check_at")


def _initial_dues(ctx: Context, priority: str) -> dict[str, datetime | None]:
    """sla.initial_dues, computed once per priority for a batch (which shares one `now`)."""
    at, by_priority = ctx.session.info.get("initial_dues", (None, {}))
    if at != ctx.now:
        by_priority = {}
        ctx.session.info["initial_dues"] = (ctx.now, by_priority)
    if priority not in by_priority:
        by_priority[priority] = sla.initial_dues(ctx.config, ctx.calendar, priority, ctx.now)
    return dict(by_priority[priority])


def change_new_case(ctx: Context, ticket: Ticket, **values: Any) -> None:
    """Change columns of the case open_ticket returned, without loading it into the session:
    one UPDATE through the write API, and the copy the later steps read follows."""
    writes.update_case(ctx.session, ticket.id, **values)
    if ticket in ctx.session:  # attached by a step before: the ORM tracks it
        for column, value in values.items():
            setattr(ticket, column, value)
    else:  # as open_ticket filled it in: loaded values, no per-attribute ORM events
        ticket.__dict__.update(values)


def attach(session: Session, ticket: Ticket) -> Ticket:
    """The case open_ticket returned, as a session object a step may change (no SELECT)."""
    if ticket in session:
        return ticket
    found = session.identity_map.get(identity_key(Ticket, ticket.id))
    if found is not None:
        return cast(Ticket, found)
    # The columns open_ticket did not give were inserted as NULL: say so, so the copy joins
    # the session fully loaded, without being read back.
    for column in Ticket.__table__.columns:
        if column.key not in ticket.__dict__:
            setattr(ticket, column.key, None)
    make_transient_to_detached(ticket)
    session.add(ticket)
    return ticket


def record_message(ctx: Context, *, internal: bool, data: dict[str, Any]) -> None:
    """The incoming message as a timeline entry of ctx.ticket, with its attachments."""
    msg, prep = ctx.message, ctx.prep
    assert ctx.ticket is not None
    ctx.entry_id = writes.add_entry(
        ctx.session,
        ticket_id=ctx.ticket.id,
        at=ctx.now,
        kind="message_in",
        actor=msg.from_address.lower(),
        direction="in",
        message_id=msg.message_id,
        subject=msg.subject,
        text=prep.new_text or msg.text,  # the full original stays in source_items.raw
        raw_sha256=prep.raw_sha256,
        internal=internal,
        data=data,
    )
    for att in prep.attachments:
        writes.add_attachment(
            ctx.session,
            entry_id=ctx.entry_id,
            filename=att.filename,
            content_type=att.content_type,
            size=att.size,
            sha256=att.sha256,
        )


def fill_registration(ctx: Context, ticket: Ticket) -> dict[str, str]:
    """The complainant's reply gives registration details the case lacks: keep them; return
    what was filled in (recorded on the reply's timeline entry)."""
    found = merge_reply(
        {
            **ticket.extra,
            "phone": ticket.complainant_phone,
            "respondent": ticket.respondent,
            "name": ticket.complainant_name,
        },
        ctx.prep.new_text or ctx.message.text,
        ctx.now.astimezone(ctx.config.timezone).date(),
    )
    if not found:
        return found
    extra = dict(ticket.extra)
    for key, value in found.items():
        if key == "phone":
            ticket.complainant_phone = value
        elif key == "respondent":
            ticket.respondent, ticket.respondent_key = value, normalise_respondent(value)
        elif key == "name":
            ticket.complainant_name = value
        else:
            extra[key] = value
    ticket.extra = extra
    return found


class OpenOrThread:
    name = "open-or-thread"
    description = "open a case for new mail, or add the mail to the case it belongs to"

    def process(self, ctx: Context) -> None:
        msg, prep = ctx.message, ctx.prep
        sender = msg.from_address.lower()
        if ctx.ticket is None:
            if prep.automatic:
                ctx.stop("ignored", f"{prep.automatic}; matches no case")
                return
            latest = None if prep.backfill else self._over_daily_cap(ctx, sender)
            if latest is not None:  # kept on their latest case, for staff: no case, no ack
                ctx.ticket = latest
                record_message(ctx, internal=True, data={"over_daily_case_cap": True})
                ctx.stop("entry", f"over new_cases_per_sender_per_day: on {latest.number}")
                return
            name = msg.from_name or prep.fields.get("name")
            ctx.ticket = open_ticket(ctx, email=sender, name=name, subject=msg.subject)
            ctx.new_ticket = True
        ticket = ctx.ticket
        # Only the complainant speaks for the case; robots and third parties are for staff.
        internal = bool(prep.automatic) or sender != ticket.complainant_email
        data: dict[str, Any] = {"automatic": prep.automatic} if prep.automatic else {}
        if not internal and not ctx.new_ticket:
            # Our MX says the complainant's From was not theirs (dmarc=fail): a forgery
            # speaks for nobody. It is kept for staff and moves nothing.
            results = domain_results(msg.raw, sender, ctx.config.escalation.trusted_authserv_ids)
            dispute = results.dispute() if results is not None else None
            if dispute is not None:
                internal, data["disputed"] = True, dispute
        if not ctx.new_ticket and not internal:
            filled = fill_registration(ctx, ticket)
            if filled:
                data["registration_filled"] = filled
        record_message(ctx, internal=internal, data=data)
        ctx.consumer_wrote = not internal and not ctx.new_ticket
        if not ctx.new_ticket:
            ticket.updated_at = max(ticket.updated_at, ctx.now)
            if not internal and not prep.backfill:
                if ticket.extra.get("imported"):
                    wake(ctx, ticket)
                consumer_replied(
                    ctx.session,
                    ctx.services,
                    ticket,
                    actor=sender,
                    now=ctx.now,
                )

    @staticmethod
    def _over_daily_cap(ctx: Context, sender: str) -> Ticket | None:
        """The sender's latest case when their mailbox opened the day's allowance of cases
        already (a robot answering every acknowledgement with a fresh mail), else None."""
        cap = ctx.config.intake.new_cases_per_sender_per_day
        count, latest = writes.cases_opened_by(ctx.session, sender, ctx.now - timedelta(days=1))
        ticket = None if count < cap or latest is None else ctx.session.get(Ticket, latest)
        if ticket is None:
            return None
        ctx.prep.notes.append(
            f"{ctx.prep.item.label}: {sender} opened {count} cases in a day "
            f"(new_cases_per_sender_per_day {cap}): added to {ticket.number}, unanswered"
        )
        return ticket


def wake(ctx: Context, ticket: Ticket) -> None:
    """An imported case (`caseloop import`) its complainant writes on now: no longer backlog.

    Its clocks start now, as for a case opened now, and Assign routes it (ctx.woken)."""
    ticket.extra = {k: v for k, v in ticket.extra.items() if k != "imported"}
    for column, due in sla.initial_dues(ctx.config, ctx.calendar, ticket.priority, ctx.now).items():
        setattr(ticket, column, due)
    ctx.woken = True
    ctx.session.add(
        TimelineEntry(ticket_id=ticket.id, at=ctx.now, kind="note", actor="caseloop",
                      internal=True, data={},
                      text="an imported case its complainant wrote on: handled from now on")
    )  # fmt: skip
