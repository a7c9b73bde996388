"""Who handles a case: routing by category to a staff group, least loaded first; urgent alerts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from daemon.config import Config, StaffMember
from daemon.store import writes
from daemon.store.models import OutboxMessage, Ticket, TimelineEntry
from handlers.classify import suggest_rejection
from handlers.context import Context, Services
from handlers.intake import attach
from handlers.notify import build_mime, new_message_id, queue_mail, summary_headers
from handlers.rejection import staff_hint
from handlers.threading import staff_reply_address
from handlers.workflow import OPEN, TransitionRefused


def route(config: Config, category: str) -> str | None:
    """The staff group for a category: the first [[routing]] rule naming it."""
    return next((r.group for r in config.routing if r.category == category), None)


def least_loaded(session: Session, config: Config, group: str) -> StaffMember | None:
    """The group member with the fewest open cases (the config's order breaks ties)."""
    members = [s for s in config.staff if group in s.groups]
    if not members:
        return None
    load = dict(
        session.execute(
            select(Ticket.assignee, func.count())
            .where(
                Ticket.assignee.in_([m.address.lower() for m in members]),
                Ticket.status.in_(OPEN),
            )
            .group_by(Ticket.assignee)
        ).all()
    )
    return min(members, key=lambda m: load.get(m.address.lower(), 0))


def assign(
    session: Session,
    services: Services,
    ticket: Ticket,
    address: str,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
) -> bool:
    """Give the case to a staff member and tell them (and the one it is taken from).

    Returns False when it already was theirs. Only configured staff can be assignees.
    """
    config = services.config
    member = config.staff_member(address)
    if member is None:
        known = ", ".join(s.address for s in config.staff) or "none configured"
        raise TransitionRefused(f"{address} is not a [[staff]] address (staff: {known})")
    new, previous = member.address.lower(), ticket.assignee
    if previous == new:
        return False
    ticket.assignee = new
    ticket.updated_at = now
    session.add(
        TimelineEntry(
            ticket_id=ticket.id,
            at=now,
            kind="note",
            actor=actor,
            internal=True,
            text=f"assignee: {previous} -> {new}" + (f" ({reason})" if reason else ""),
            data={"changes": [f"assignee: {previous} -> {new}"]},
        )
    )
    session.flush()
    if actor == "caseloop" and _fold(session, config, ticket, new, now):
        pass  # routed among many: the case goes into one mail at the end of the fold
    else:
        _mail_assignment(session, services, ticket, new, previous, actor, now)
    if previous:
        queue_mail(
            session,
            config,
            services.templates,
            ticket=ticket,
            kind="unassigned",
            intent=f"unassigned:{ticket.number}:{previous}:{now.isoformat()}",
            now=now,
            automatic="auto-generated",
            recipient=previous,
            internal=True,
            context={"assignee": new, "actor": actor},
        )
    return True


def _mail_assignment(
    session: Session,
    services: Services,
    ticket: Ticket,
    new: str,
    previous: str | None,
    actor: str,
    now: datetime,
) -> None:
    config = services.config
    summary = CaseSummary.of(session, config, ticket).context(config.language_of(new))
    queue_mail(
        session,
        config,
        services.templates,
        ticket=ticket,
        kind="assigned",
        intent=f"assigned:{ticket.number}:{new}:{now.isoformat()}",
        now=now,
        automatic="auto-generated",
        recipient=new,
        internal=True,
        reply_to=staff_reply_address(session, config, ticket, new, now),
        context={"previous": previous, "actor": actor, **summary},
    )


def _fold(session: Session, config: Config, ticket: Ticket, staff: str, now: datetime) -> bool:
    """Hold the assignment mail when the staff member had one less than assignment_fold ago:
    a "folded" outbox row (never sent itself) until the fold ends, when send_folded mails
    every case held for them in one. A burst of routed cases (a recall, a robot) is one mail."""
    fold = config.escalation.assignment_fold.as_timedelta()
    last = writes.last_mail_of(session, staff, ("assigned", "assigned_digest")) if fold else None
    if last is None or last <= now - fold:
        return False
    writes.queue_outbox(
        session,
        ticket_id=ticket.id,
        kind="assigned",
        intent=f"assigned:{ticket.number}:{staff}:{now.isoformat()}",
        status="folded",
        recipient=staff,
        message_id=new_message_id(config),
        subject=ticket.subject or "",
        raw=b"",
        automatic=False,
        created_at=now,
        next_attempt_at=last + fold,
        attempts=0,
        sent_at=None,
        last_error=None,
    )
    return True


def send_folded(session: Session, services: Services, now: datetime) -> int:
    """Mail each staff member the cases folded for them whose fold has ended, in one mail."""
    rows = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.status == "folded", OutboxMessage.next_attempt_at <= now)
        .order_by(OutboxMessage.id)
        .limit(1000)
        .with_for_update(skip_locked=True)
    ).all()
    held: dict[str, list[OutboxMessage]] = {}
    for row in rows:
        held.setdefault(row.recipient, []).append(row)
    for staff, mine in held.items():
        tickets = [session.get(Ticket, row.ticket_id) for row in mine if row.ticket_id]
        cases = [t for t in tickets if t is not None and t.assignee == staff and t.status in OPEN]
        for row in mine:
            row.status = "merged"  # shown by `outbox list`; its case is in the mail below
        if cases:
            _queue_folded(session, services, staff, cases, now)
    return len(held)


def _queue_folded(
    session: Session, services: Services, staff: str, cases: list[Ticket], now: datetime
) -> None:
    config = services.config
    language = config.language_of(staff)
    mail = services.templates.render("assigned_digest", language, cases=cases)
    headers = summary_headers(services.templates, config, language, staff, mail.subject, now)
    writes.queue_outbox(
        session,
        ticket_id=None,
        kind="assigned_digest",
        intent=f"assigned_digest:{staff}:{now.isoformat()}"[:200],
        status="queued",
        recipient=staff,
        message_id=headers["Message-ID"],
        subject=headers["Subject"],
        raw=build_mime(headers, mail),
        automatic=True,
        created_at=now,
        next_attempt_at=now,
        attempts=0,
        sent_at=None,
        last_error=None,
    )


def alert_urgent(
    session: Session, services: Services, ticket: Ticket, now: datetime, why: str | None
) -> int:
    """Mail [escalation] urgent_notify and the supervisors about an urgent case, once each."""
    config = services.config
    recipients = dict.fromkeys(
        a.lower() for a in (*config.escalation.urgent_notify, *config.escalation.supervisors)
    )
    if not recipients:
        return 0
    case = CaseSummary.of(session, config, ticket)
    sent = 0
    for address in recipients:
        summary = case.context(config.language_of(address))
        queued = queue_mail(
            session,
            config,
            services.templates,
            ticket=ticket,
            kind="urgent",
            intent=f"urgent:{ticket.number}:{address}",
            now=now,
            automatic="auto-generated",
            recipient=address,
            internal=True,
            # their own proof-carrying address: a #note or #priority in reply is acted on
            reply_to=staff_reply_address(session, config, ticket, address, now),
            context={"why": why, **summary},
        )
        sent += queued is not None
    return sent


@dataclass(frozen=True)
class CaseSummary:
    """What staff mail shows of a case: its first message and any rejection hint."""

    complaint: str
    hint: str | None  # a suggest_rejection code, or a config rule's own words

    @classmethod
    def of(cls, session: Session, config: Config, ticket: Ticket) -> CaseSummary:
        first = session.scalar(
            select(TimelineEntry.text)
            .where(TimelineEntry.ticket_id == ticket.id, TimelineEntry.kind == "message_in")
            .order_by(TimelineEntry.id)
            .limit(1)
        )
        complaint = (first or "").strip()
        if len(complaint) > 4000:
            complaint = complaint[:4000] + " [...]"
        return cls(complaint, suggest_rejection(f"{ticket.subject}\n{complaint}", config.rules))

    def context(self, language: str) -> dict[str, object]:
        """The template context for a reader of `language`."""
        code = self.hint
        label = staff_hint(code, language) if code else None
        return {
            "complaint": self.complaint,
            "suggestion": f"{code}: {label}" if code and label != code else code,
        }


class Assign:
    name = "assign"
    description = "route a new case to the least-loaded member of its category's staff group"

    def process(self, ctx: Context) -> None:
        if not (ctx.new_ticket or ctx.woken) or ctx.ticket is None or ctx.prep.automatic:
            return
        escalation = ctx.config.escalation
        # A case urgent only as one of a group: the group's daily mail tells (handlers/group.py).
        alone = ctx.prep.priority == "urgent" or "group" not in ctx.ticket.extra
        urgent = (
            ctx.ticket.priority == "urgent"
            and alone
            and bool(escalation.urgent_notify or escalation.supervisors)
        )
        group = route(ctx.config, ctx.ticket.category)
        if group is None and not urgent:
            return  # nobody to route to or alert: the case stays as opened
        ticket = attach(ctx.session, ctx.ticket)  # a session object, to change it
        services = ctx.services
        if group is not None:
            member = least_loaded(ctx.session, ctx.config, group)
            if member is not None:
                assign(
                    ctx.session,
                    services,
                    ticket,
                    member.address,
                    actor="caseloop",
                    now=ctx.now,
                    reason=f"routing: {ticket.category} -> {group}",
                )
        if urgent:
            alert_urgent(ctx.session, services, ticket, ctx.now, None)
        ctx.ticket = ticket
