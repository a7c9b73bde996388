"""SLA clocks and the escalation ladder: due times per case, reminders, levels, daily urging."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, time, timedelta

from sqlalchemy import ColumnElement, and_, inspect, or_, select
from sqlalchemy.orm import Session

from daemon.clock import Duration, WorkCalendar
from daemon.config import Config, SlaPolicy
from daemon.store import writes
from daemon.store.models import EscalationStep, Ticket, TimelineEntry
from handlers.context import Services
from handlers.notify import queue_mail, rate_limited
from handlers.threading import staff_reply_address

log = logging.getLogger(__name__)

# clock name -> the Ticket column holding its due time
CLOCKS = {
    "first_response": "due_first_response",
    "acceptance": "due_acceptance",
    "resolution": "due_resolution",
}
# When no [sla] business_hours are set, people are mailed about work between these hours of a
# working day (LESSONS 10: no reminders at midnight or on holidays).
DEFAULT_SEND_HOURS = (time(9), time(18))
BATCH = 200  # cases taken per query of one sweep
RATE_LIMIT_RETRY = timedelta(minutes=15)  # a recipient at the hourly cap: try the step later
LEVELS = {"level1": 1, "level2": 2}


@dataclass(frozen=True)
class Step:
    """One rung of the ladder for one clock of one case, due at `at`."""

    clock: str
    deadline: datetime
    name: str  # remind | level1 | level2 | daily:YYYY-MM-DD
    at: datetime


def initial_dues(
    config: Config, calendar: WorkCalendar, priority: str, now: datetime
) -> dict[str, datetime | None]:
    """The due columns of a case opened now (intake.open_ticket writes them as they are)."""
    policy = config.sla.policy(priority)
    dues: dict[str, datetime | None] = {
        "due_first_response": calendar.add(now, policy.first_response),
        "due_acceptance": calendar.add(now, policy.acceptance),
        "due_resolution": None,
    }
    steps = plan(config, calendar, priority, dues, now)
    dues["sla_next_check_at"] = min((s.at for s in steps), default=None)
    return dues


def on_transition(ticket: Ticket, old: str, new: str, services: Services, now: datetime) -> None:
    """Stamp, pause, resume and clear the case's clocks for a move from `old` to `new`."""
    calendar = services.calendar
    policy = services.config.sla.policy(ticket.priority)
    if old == "waiting" and ticket.sla_paused_at is not None:
        _resume(ticket, policy, calendar, now)
    if new in ("accepted", "rejected") and ticket.first_response_at is None:
        ticket.first_response_at = now  # the decision is the consumer's first answer
        ticket.due_first_response = None
    if new == "accepted":
        ticket.due_acceptance = None
        ticket.due_resolution = calendar.add(now, policy.resolution)
    elif new in ("rejected", "resolved", "closed"):
        ticket.due_first_response = None
        ticket.due_acceptance = None
        ticket.due_resolution = None
    elif new == "in_progress" and old in ("resolved", "closed"):
        ticket.due_resolution = calendar.add(now, policy.resolution)  # an appeal starts anew
    if new == "waiting":
        ticket.sla_paused_at = ticket.sla_paused_at or now
    _reschedule(ticket, services.config, calendar, now)


def on_priority_change(ticket: Ticket, services: Services, now: datetime) -> None:
    """A staff override of the priority: open clocks follow the new priority's policy.

    Each open due time keeps its start (and any pause already excluded) and gets the new
    policy's length: new due = old due - old length + new length.
    """
    calendar = services.calendar
    new_policy = services.config.sla.policy(ticket.priority)
    old_priority = _previous_priority(ticket)
    old_policy = services.config.sla.policy(old_priority)
    for clock, column in CLOCKS.items():
        due = getattr(ticket, column)
        if due is None:
            continue
        start = calendar.subtract(due, getattr(old_policy, clock))
        setattr(ticket, column, calendar.add(start, getattr(new_policy, clock)))
    ticket.extra = {**ticket.extra, "sla_priority": ticket.priority}
    _reschedule(ticket, services.config, calendar, now)


def _previous_priority(ticket: Ticket) -> str:
    """The priority the case's due times were computed with (before the override)."""
    history = inspect(ticket).attrs.priority.history
    if history.deleted:
        return str(history.deleted[0])
    recorded = (ticket.extra or {}).get("sla_priority")
    return recorded if isinstance(recorded, str) else ticket.priority


def _resume(ticket: Ticket, policy: SlaPolicy, calendar: WorkCalendar, now: datetime) -> None:
    """Leaving `waiting`: shift every clock still running at the pause by the time paused."""
    paused_at = ticket.sla_paused_at
    assert paused_at is not None
    ticket.sla_paused_at = None
    for clock, column in CLOCKS.items():
        due = getattr(ticket, column)
        if due is None or due <= paused_at:
            continue  # a deadline already missed stays missed (and its ladder goes on)
        duration: Duration = getattr(policy, clock)
        if duration.working:
            shifted = calendar.add_working(due, calendar.working_between(paused_at, now))
        else:
            shifted = due + (now - paused_at)
        setattr(ticket, column, shifted)


def _reschedule(ticket: Ticket, config: Config, calendar: WorkCalendar, now: datetime) -> None:
    """The next sweep visit after the clocks changed (the sweep then knows the steps done)."""
    if ticket.sla_paused_at is not None:
        ticket.sla_next_check_at = None
        return
    dues = {column: getattr(ticket, column) for column in CLOCKS.values()}
    steps = plan(config, calendar, ticket.priority, dues, now)
    ticket.sla_next_check_at = min((s.at for s in steps), default=None)
    if all(d is None or d > now for d in dues.values()):
        ticket.escalation_level = 0


def plan(
    config: Config,
    calendar: WorkCalendar,
    priority: str,
    dues: dict[str, datetime | None],
    now: datetime,
    done: frozenset[tuple[str, datetime, str]] = frozenset(),
) -> list[Step]:
    """Every step not yet done for the open clocks: due ones (at <= now) and the next ones."""
    policy = config.sla.policy(priority)
    urgent = priority == "urgent"
    esc = config.escalation
    steps: list[Step] = []
    for clock, column in CLOCKS.items():
        deadline = dues.get(column)
        if deadline is None:
            continue

        def add(name: str, at: datetime, deadline: datetime = deadline, clock: str = clock) -> None:
            if (clock, deadline, name) not in done:
                steps.append(Step(clock, deadline, name, at))

        duration: Duration = getattr(policy, clock)
        lead = Duration(duration.amount * (1 - esc.remind_at), duration.unit, duration.working)
        remind = calendar.subtract(deadline, lead)
        if not urgent:
            remind = calendar.next_send_time(remind, DEFAULT_SEND_HOURS)
        if now < deadline and remind < deadline:
            add("remind", remind)
        add("level1", deadline)
        add("level2", calendar.add(deadline, esc.level2_after))
        # Daily urging on each working day after the one of the breach, in working hours;
        # a day missed (the daemon was down) is not made up later.
        local_zone = calendar.zone
        first_day = deadline.astimezone(local_zone).date() + timedelta(days=1)
        from_ = max(now, datetime.combine(first_day, time(0), local_zone))
        today = calendar.next_send_time(from_, DEFAULT_SEND_HOURS)
        after = datetime.combine(today.astimezone(local_zone).date(), time(0), local_zone)
        tomorrow = calendar.next_send_time(after + timedelta(days=1), DEFAULT_SEND_HOURS)
        for daily in (today, tomorrow):
            add(f"daily:{daily.astimezone(local_zone).date().isoformat()}", daily)
    return steps


def sweep(session: Session, services: Services, now: datetime) -> int:
    """Take every escalation step that is due; return how many were taken.

    One indexed query (tickets.sla_next_check_at <= now) finds the cases; each visit takes
    its due steps and sets the next visit strictly after now, so the loop ends. Every step is
    recorded once in escalation_steps (INSERT .. ON CONFLICT DO NOTHING): a second sweep, a
    restart or another instance racing this one finds it taken and sends nothing again.
    """
    calendar = services.calendar
    taken = 0
    query = (
        select(Ticket)
        .where(Ticket.sla_next_check_at <= now)
        .order_by(Ticket.sla_next_check_at)
        .limit(BATCH)
        .with_for_update(skip_locked=True)
    )
    while True:
        tickets = session.scalars(query).all()
        if not tickets:
            return taken
        for ticket in tickets:
            taken += _visit(session, services, calendar, ticket, now)
        session.flush()


def _visit(
    session: Session, services: Services, calendar: WorkCalendar, ticket: Ticket, now: datetime
) -> int:
    config = services.config
    rows = session.execute(
        select(EscalationStep.clock, EscalationStep.deadline, EscalationStep.step).where(
            EscalationStep.ticket_id == ticket.id
        )
    ).all()
    done = frozenset((c, d, s) for c, d, s in rows)
    dues = {column: getattr(ticket, column) for column in CLOCKS.values()}
    taken = 0
    later: list[datetime] = []
    level: dict[str, int] = {}
    for clock, column in CLOCKS.items():
        deadline = dues[column]
        if deadline is not None:
            reached = [LEVELS.get(s, 0) for c, d, s in rows if c == clock and d == deadline]
            level[clock] = max(reached, default=0)
    for step in plan(config, calendar, ticket.priority, dues, now, done):
        if step.at > now:
            later.append(step.at)
            continue
        recipients = _recipients(config, ticket, step)
        if any(rate_limited(session, config, r, now) for r in recipients):
            later.append(now + RATE_LIMIT_RETRY)  # never flood; never drop: try again later
            continue
        step_id = _record(session, ticket.id, step, now)
        if step_id is None:
            continue  # someone else took it
        taken += 1
        level[step.clock] = max(level.get(step.clock, 0), LEVELS.get(step.name, 0))
        for recipient in recipients:
            _mail(session, services, ticket, step, step_id, recipient, now)
        _entry(session, ticket, step, recipients, now)
        log.info(
            "event=sla.step ticket=%s clock=%s step=%s mails=%d",
            ticket.number,
            step.clock,
            step.name,
            len(recipients),
        )
    ticket.escalation_level = max(level.values(), default=0)
    ticket.sla_next_check_at = max(min(later), now + timedelta(seconds=1)) if later else None
    return taken


def _recipients(config: Config, ticket: Ticket, step: Step) -> list[str]:
    """Who is mailed for a step now (a level step of a non-urgent case waits for the digest)."""
    supervisors = list(dict.fromkeys(a.lower() for a in config.escalation.supervisors))
    if step.name == "remind":
        return [ticket.assignee.lower()] if ticket.assignee else supervisors
    if step.name.startswith("daily:"):
        # The handler is urged again; an unassigned case is in the supervisors' daily digest.
        return [ticket.assignee.lower()] if ticket.assignee else []
    if ticket.priority != "urgent":
        return []
    urgent = [a.lower() for a in config.escalation.urgent_notify]
    return list(dict.fromkeys(supervisors + urgent))


def _record(session: Session, ticket_id: int, step: Step, now: datetime) -> int | None:
    """Insert the step once; None when it was already there (taken by an earlier sweep)."""
    found = writes.insert_if_absent(
        session,
        EscalationStep,
        ("ticket_id", "clock", "deadline", "step"),
        ticket_id=ticket_id,
        clock=step.clock,
        deadline=step.deadline,
        step=step.name,
        at=now,
        in_digest_at=None,
    )
    return int(found) if found is not None else None


def _entry(session: Session, ticket: Ticket, step: Step, told: list[str], now: datetime) -> None:
    """The step on the case's timeline (SPEC §5 kind `escalation`): level, clock, who was told."""
    level = LEVELS.get(step.name, 0)
    who = ", ".join(told) if told else "nobody now (the supervisors' digest lists it)"
    what = f"level {level} escalation" if level else step.name.replace("daily:", "daily reminder ")
    session.add(
        TimelineEntry(
            ticket_id=ticket.id,
            at=now,
            kind="escalation",
            actor="caseloop",
            internal=True,
            text=f"{what}: {step.clock} clock, due {step.deadline:%Y-%m-%d %H:%M} UTC; told {who}",
            data={
                "level": level,
                "clock": step.clock,
                "step": step.name,
                "deadline": step.deadline.isoformat(),
                "told": told,
            },
        )
    )


def _mail(
    session: Session,
    services: Services,
    ticket: Ticket,
    step: Step,
    step_id: int,
    recipient: str,
    now: datetime,
) -> None:
    config = services.config
    level = LEVELS.get(step.name, 0)
    queue_mail(
        session,
        config,
        services.templates,
        ticket=ticket,
        kind="escalation" if level else "reminder",
        intent=f"sla:{step_id}:{recipient}"[:200],
        now=now,
        context={
            "clock": step.clock,
            "deadline": step.deadline,
            "overdue": now >= step.deadline,
            "level": level,
            "daily": step.name.startswith("daily:"),
            "overdue_for": _overdue_text(now - step.deadline),
        },
        automatic="auto-generated",
        recipient=recipient,
        internal=True,
        reply_to=staff_reply_address(session, config, ticket, recipient, now),
    )


def _overdue_text(delta: timedelta) -> dict[str, int]:
    """How long past the deadline, as days and hours for the templates."""
    seconds = max(int(delta.total_seconds()), 0)
    return {"days": seconds // 86400, "hours": seconds % 86400 // 3600}


def past_deadline(now: datetime) -> ColumnElement[bool]:
    """The query clause: one of the case's due times has passed (paused or not)."""
    return or_(*(getattr(Ticket, column) < now for column in CLOCKS.values()))


def overdue(now: datetime) -> ColumnElement[bool]:
    """The query clause: a case whose clocks run and one of whose deadlines has passed.

    A case waiting on the consumer has its clocks paused (SPEC §4), so it is not overdue while
    it waits. Combine it with `Ticket.status.in_(workflow.OPEN)` (closed, rejected and resolved
    cases have no running clock anyway). Used by `caseloop status` and the supervisor digest.
    """
    return and_(
        Ticket.status != "waiting",  # SPEC §4: waiting pauses the clocks ...
        Ticket.sla_paused_at.is_(None),  # ... and this is the pause as stored
        past_deadline(now),
    )
