"""The case lifecycle (SPEC §4): one table of allowed transitions, one function applying them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.store.models import Ticket, TimelineEntry
from handlers.context import Services
from handlers.notify import queue_mail

STATUSES = ("received", "accepted", "rejected", "in_progress", "waiting", "resolved", "closed")

# from-status -> the statuses it may move to
TRANSITIONS: dict[str, frozenset[str]] = {
    "received": frozenset({"accepted", "rejected", "waiting"}),
    "accepted": frozenset({"in_progress", "waiting", "resolved"}),
    "in_progress": frozenset({"waiting", "resolved"}),
    "waiting": frozenset({"received", "in_progress", "resolved"}),
    "resolved": frozenset({"closed", "in_progress"}),
    "rejected": frozenset({"closed"}),
    "closed": frozenset({"in_progress"}),
}

# transitions the consumer is told about, and the kind of mail (templates/<lang>/<kind>.*)
VISIBLE: dict[tuple[str, str], str] = {
    ("received", "accepted"): "accepted",
    ("received", "rejected"): "rejected",
    ("received", "waiting"): "info_requested",
    ("accepted", "waiting"): "info_requested",
    ("in_progress", "waiting"): "info_requested",
    ("accepted", "in_progress"): "in_progress",  # only with [tickets] notify_in_progress
    ("accepted", "resolved"): "resolved",
    ("in_progress", "resolved"): "resolved",
    ("waiting", "resolved"): "resolved",
    ("resolved", "closed"): "closed",
    ("resolved", "in_progress"): "reopened",
    ("closed", "in_progress"): "reopened",
}
OPTIONAL = frozenset({"in_progress"})  # mails the config may turn off
OPEN = frozenset({"received", "accepted", "in_progress", "waiting"})  # someone must act


class TransitionRefused(Exception):
    """An illegal transition; nothing was changed."""


def refusal(number: str, status: str, resume_to: str | None, new: str) -> str | None:
    """Why a case in `status` may not move to `new`, or None when it may.

    A waiting case goes back where it came from: one waiting for registration details
    before any decision (resume_to "received") returns to `received`, and one accepted
    earlier never does (an accepted case cannot be rejected by a detour through waiting).
    """
    if new == status:
        return f"{number} is already {new}"
    if new not in STATUSES:
        return f"unknown status {new!r} (statuses: {', '.join(STATUSES)})"
    allowed = allowed_moves(status, resume_to)
    if new not in allowed:
        names = ", ".join(allowed) or "none"
        return f"{number}: cannot go from {status} to {new} (allowed: {names})"
    return None


def allowed_moves(status: str, resume_to: str | None) -> list[str]:
    """Where a case in `status` may go now, sorted."""
    allowed = TRANSITIONS[status]
    if status == "waiting":
        before_decision = (resume_to or "in_progress") == "received"
        allowed = frozenset({"received"}) if before_decision else allowed - {"received"}
    return sorted(allowed)


def mails_consumer(config: Config, old: str, new: str) -> bool:
    """Whether moving from `old` to `new` sends the consumer a mail (SPEC §4)."""
    kind = VISIBLE.get((old, new))
    return kind is not None and (kind not in OPTIONAL or config.tickets.notify_in_progress)


def refuse_if_erased(ticket: Ticket) -> None:
    """An erased case (handlers/privacy.py) is kept for the statistics only: nothing more is
    done on it, so no new words land on it and no mail goes to its erased address."""
    if ticket.erased_at is not None:
        raise TransitionRefused(
            f"{ticket.number}: its personal data was erased; it is kept for the statistics only"
        )


def check_transition(ticket: Ticket, new: str) -> None:
    """Raise TransitionRefused unless the table allows the case to move to `new`."""
    refuse_if_erased(ticket)
    problem = refusal(ticket.number, ticket.status, (ticket.extra or {}).get("resume_to"), new)
    if problem is not None:
        raise TransitionRefused(problem)


def apply_transition(
    session: Session,
    services: Services,
    ticket: Ticket,
    new: str,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
    notify: bool = True,
    message: str | None = None,
    consumer_hours: bool = False,
) -> TimelineEntry:
    """Move a case to `new`, record who/when/why, stamp its clocks, queue the consumer's mail.

    `reason` is recorded and shown (a rejection's reason code or words); `message` is what a
    person wrote to go with the move (a resolution, a request for details) and goes into the
    consumer's mail too. A rejection needs a reason.
    """
    old = ticket.status
    check_transition(ticket, new)
    if new == "rejected" and not (reason or "").strip():
        raise TransitionRefused(f"{ticket.number}: a rejection needs a reason (--reason)")
    ticket.status = new
    ticket.updated_at = now
    if new == "accepted":
        ticket.accepted_at = now
    elif new == "resolved":
        ticket.resolved_at = now
    elif new == "closed":
        ticket.closed_at = now
    elif new == "waiting":
        ticket.extra = {**ticket.extra, "resume_to": old}  # where the consumer's answer leads
    elif new == "in_progress" and old in ("resolved", "closed"):
        ticket.reopened_count += 1  # an appeal (SPEC §4)
        ticket.resolved_at = None
        ticket.closed_at = None
    for hook in services.transition_hooks:  # the SLA clocks, the survey (handlers/pipeline.py)
        hook(ticket, old, new, services, now)
    entry = TimelineEntry(
        ticket_id=ticket.id,
        at=now,
        kind="status",
        actor=actor,
        internal=False,
        text="\n\n".join(t for t in (reason, message) if t) or None,
        data={"from": old, "to": new},
    )
    session.add(entry)
    kind = VISIBLE.get((old, new)) if mails_consumer(services.config, old, new) else None
    if notify and kind is not None:
        session.flush()
        queued = queue_mail(
            session,
            services.config,
            services.templates,
            ticket=ticket,
            kind=kind,
            intent=f"status:{ticket.number}:{entry.id}",
            now=now,
            automatic=None,  # a person's decision, not an automatic answer
            consumer_hours=consumer_hours,
            context={
                "reason": reason,
                "message": message,
                "policy": services.config.sla.policy(ticket.priority),
            },
        )
        if queued is not None and ticket.first_response_at is None:
            ticket.first_response_at = now  # a person has answered the consumer
            ticket.due_first_response = None
    return entry


def consumer_replied(
    session: Session, services: Services, ticket: Ticket, *, actor: str, now: datetime
) -> None:
    """The complainant answered: a case waiting on them goes back to where it was."""
    if ticket.status == "waiting":
        resume_to = ticket.extra.get("resume_to", "in_progress")
        apply_transition(
            session,
            services,
            ticket,
            resume_to,
            actor=actor,
            now=now,
            reason="the consumer replied",
            notify=False,
        )
