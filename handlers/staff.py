"""Staff actions on a case (CLI now, staff mail later): reply, set fields, note."""

from __future__ import annotations

import secrets
from datetime import datetime

from sqlalchemy.orm import Session

from daemon.config import PRIORITIES
from daemon.store.models import Ticket, TimelineEntry
from handlers import sla
from handlers.assign import alert_urgent, assign
from handlers.context import Services
from handlers.notify import queue_mail
from handlers.workflow import (
    TransitionRefused,
    apply_transition,
    check_transition,
    mails_consumer,
    refuse_if_erased,
)


def reply(
    session: Session,
    services: Services,
    ticket: Ticket,
    message: str,
    *,
    actor: str,
    now: datetime,
    status: str | None = None,
) -> None:
    """Send the consumer a staff reply, threaded; optionally move the case in the same step.

    One mail either way: a move the consumer is told about (resolved, waiting, accepted...)
    sends that move's notice carrying the reply's text (the resolution notice says the case is
    resolved and that a follow-up comes, as `tickets set` and `#status` by mail do); any other
    reply goes as a plain reply. For a rejection the text is the reason.
    """
    refuse_if_erased(ticket)
    if not message.strip():
        raise TransitionRefused("an empty reply is not sent")
    moving = status is not None and status != ticket.status
    if status is not None and moving:
        check_transition(ticket, status)
    notice = (
        status is not None and moving and mails_consumer(services.config, ticket.status, status)
    )
    if not notice:
        queue_mail(
            session,
            services.config,
            services.templates,
            ticket=ticket,
            kind="reply",
            intent=f"reply:{ticket.number}:{secrets.token_hex(8)}",  # each staff reply is its own
            now=now,
            automatic=None,  # a person's decision, not an automatic answer
            context={"message": message},
        )
    if ticket.first_response_at is None:
        ticket.first_response_at = now
        ticket.due_first_response = None
        ticket.sla_next_check_at = now  # the sweep redoes the case's schedule
    if status is not None and moving:
        rejecting = status == "rejected"
        apply_transition(
            session,
            services,
            ticket,
            status,
            actor=actor,
            now=now,
            reason=message if rejecting else None,
            message=message if notice and not rejecting else None,
            notify=notice,
        )


def set_fields(
    session: Session,
    services: Services,
    ticket: Ticket,
    *,
    actor: str,
    now: datetime,
    status: str | None = None,
    assignee: str | None = None,
    category: str | None = None,
    priority: str | None = None,
    reason: str | None = None,
    message: str | None = None,
) -> list[str]:
    """Apply a staff change; every field is checked before anything changes.

    Overrides of category and priority are kept in the timeline; a new assignee is told (and
    the previous one); a case raised to urgent alerts compliance and the supervisors.
    """
    refuse_if_erased(ticket)
    categories = services.config.categories
    if category is not None and category not in categories:
        raise TransitionRefused(f"unknown category {category!r} ({', '.join(categories)})")
    if priority is not None and priority not in PRIORITIES:
        raise TransitionRefused(f"unknown priority {priority!r} ({', '.join(PRIORITIES)})")
    if assignee is not None and services.config.staff_member(assignee) is None:
        known = ", ".join(s.address for s in services.config.staff) or "none configured"
        raise TransitionRefused(f"{assignee} is not a [[staff]] address (staff: {known})")
    if status is not None and status != ticket.status:
        check_transition(ticket, status)
        if status == "rejected" and not (reason or "").strip():
            raise TransitionRefused(f"{ticket.number}: a rejection needs a reason (--reason)")
    changes: list[str] = []
    for field, value in (("category", category), ("priority", priority)):
        if value is not None and getattr(ticket, field) != value:
            changes.append(f"{field}: {getattr(ticket, field)} -> {value} (override)")
            setattr(ticket, field, value)
    if changes:
        text = "; ".join(changes) + (f" ({reason})" if reason else "")
        note(
            session, ticket, text, actor=actor, now=now, data={"changes": changes, "override": True}
        )
    if priority is not None and any(c.startswith("priority") for c in changes):
        sla.on_priority_change(ticket, services, now)
        if priority == "urgent":
            alert_urgent(session, services, ticket, now, f"raised to urgent by {actor}")
    if assignee is not None and assign(
        session, services, ticket, assignee, actor=actor, now=now, reason=reason
    ):
        changes.append(f"assignee -> {ticket.assignee}")
    if status is not None and status != ticket.status:
        apply_transition(
            session, services, ticket, status, actor=actor, now=now, reason=reason, message=message
        )
        changes.append(f"status -> {status}")
    return changes


def note(
    session: Session,
    ticket: Ticket,
    message: str,
    *,
    actor: str,
    now: datetime,
    data: dict[str, object] | None = None,
) -> None:
    """An internal note: on the timeline for staff, never sent."""
    refuse_if_erased(ticket)
    session.add(
        TimelineEntry(
            ticket_id=ticket.id,
            at=now,
            kind="note",
            actor=actor,
            internal=True,
            text=message,
            data=data or {},
        )
    )
    ticket.updated_at = now
