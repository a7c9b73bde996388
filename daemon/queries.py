"""The read-only database queries behind `caseloop status`, `tickets list/show` and `outbox list`.

daemon/cli.py wires the commands and prints; what they read is asked here, in one place, and
nothing here writes. "Open" is handlers.workflow.OPEN (someone must act) and "overdue" is
handlers.sla.overdue, the same clauses the supervisor digest uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from daemon.store import coordination
from daemon.store.models import OutboxMessage, SourceState, Ticket
from daemon.views import iso
from handlers.sla import overdue
from handlers.workflow import OPEN

if TYPE_CHECKING:
    from daemon.app import App


def ticket_by_number(session: Session, number: str) -> Ticket | None:
    """The case with this number (any case), or None."""
    return session.scalar(select(Ticket).where(Ticket.number == number.upper()))


def latest_tickets(session: Session, status: str | None, limit: int) -> Sequence[Ticket]:
    """Cases newest first, of one status when given."""
    query = select(Ticket).order_by(Ticket.created_at.desc(), Ticket.id.desc())
    if status:
        query = query.where(Ticket.status == status)
    return session.scalars(query.limit(limit)).all()


def latest_outbox(session: Session, status: str | None, limit: int) -> Sequence[OutboxMessage]:
    """Outgoing mails newest first, of one status when given."""
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc())
    if status:
        query = query.where(OutboxMessage.status == status)
    return session.scalars(query.limit(limit)).all()


POLL_STALLS = timedelta(seconds=10)  # a poll (fetching a batch) longer than this is stalled


def status_report(app: App, session: Session) -> dict[str, Any]:
    """SPEC §2 `status`: sources, outbox, open/overdue/urgent counts, next jobs."""
    zone, now = app.config.timezone, app.clock.now()
    states = {s.source: s for s in session.scalars(select(SourceState))}
    sources = []
    holders = {h.name: h.holder for h in coordination.leases(session, now)}
    stale = 3 * app.config.intake.poll_interval.as_timedelta() + timedelta(seconds=60)
    for source in app.sources:  # as the daemon recorded them: status opens no connection
        state = states.get(source.name)
        polled = state.last_poll_at if state else None
        recorded = state.state if state else {}
        since, due = recorded.get("polling_since"), recorded.get("next_poll_by")
        polling = datetime.fromisoformat(since) if since else None
        held_by = holders.get(coordination.source_lease(source.name))
        # a live instance holds it, yet its next poll has not begun (a wait that hangs)
        overdue_poll = (
            held_by is not None
            and polling is None
            and due is not None
            and now - datetime.fromisoformat(due) > POLL_STALLS
        )
        sources.append(
            {
                "name": source.name,
                "describe": source.describe(),
                "backlog": recorded.get("backlog"),
                "last_poll_at": iso(polled, zone),
                "lag_seconds": round((now - polled).total_seconds()) if polled else None,
                # a poll going on for long (a server that stopped answering), or no poll for
                # longer than a poll interval, its retries and a command's timeout allow
                "stalled": (polling is not None and now - polling > POLL_STALLS)
                or overdue_poll
                or (polled is not None and now - polled > stale),
                "polling_since": iso(polling, zone),
                "failing": bool(recorded.get("failing")),
                "last_error": state.last_error if state else None,
                "last_error_at": iso(state.last_error_at, zone) if state else None,
                "held_by": held_by,
            }
        )
    outbox = dict(
        session.execute(
            select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)
        ).all()
    )
    by_status = dict(
        session.execute(select(Ticket.status, func.count()).group_by(Ticket.status)).all()
    )
    is_open = Ticket.status.in_(OPEN)
    late = session.scalar(select(func.count()).select_from(Ticket).where(is_open, overdue(now)))
    urgent = session.scalar(
        select(func.count()).select_from(Ticket).where(is_open, Ticket.priority == "urgent")
    )
    digest_trigger = CronTrigger.from_crontab(app.config.escalation.digest_cron, timezone=zone)
    next_jobs = {
        # the earliest moment a clock job has something to do; the digest's next slot
        "sla_step": session.scalar(select(func.min(Ticket.sla_next_check_at))),
        "survey": session.scalar(select(func.min(Ticket.survey_due_at))),
        "survey_close": session.scalar(select(func.min(Ticket.survey_expires_at))),
        "digest": digest_trigger.get_next_fire_time(None, now),
        "outbox": session.scalar(
            select(func.min(OutboxMessage.next_attempt_at)).where(OutboxMessage.status == "queued")
        ),
    }
    alive = coordination.alive(session, now, app.config.lease.as_timedelta())
    leases = coordination.leases(session, now)
    live = {i.id for i in alive}
    return {
        "instances": [
            {
                "id": i.id,
                "host": i.host,
                "pid": i.pid,
                "mode": i.mode,
                "version": i.version,
                "started_at": iso(i.started_at, zone),
                "heartbeat_at": iso(i.heartbeat_at, zone),
                "holds": [lease.name for lease in leases if lease.holder == i.id],
            }
            for i in alive
        ],
        "leases": [
            {
                "name": lease.name,
                "holder": lease.holder,
                "until": iso(lease.expires_at, zone),
                "since": iso(lease.taken_at, zone),
                # an import, or an instance whose heartbeat stopped (its lease runs out)
                "holder_alive": lease.holder in live,
            }
            for lease in leases
        ],
        "sources": sources,
        "next": {job: iso(when, zone) for job, when in next_jobs.items()},
        "outbox": {k: outbox.get(k, 0) for k in ("queued", "failed", "sent")},
        "cases": {
            "open": sum(by_status.get(s, 0) for s in OPEN),
            "overdue": late,
            "urgent": urgent,
            "by_status": by_status,
        },
    }
