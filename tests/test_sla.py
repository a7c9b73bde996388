"""SLA clocks and the escalation ladder, with a moved clock, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from daemon import config as configmod
from daemon.app import App
from daemon.clock import WorkCalendar
from daemon.store.models import EscalationStep, OutboxMessage, Ticket
from daemon.views import ticket_json
from handlers import sla
from handlers.workflow import apply_transition

SH = ZoneInfo("Asia/Shanghai")
STAFF = """
[escalation]
supervisors = ["boss@example.org"]
urgent_notify = ["safety@example.org"]
level2_after = "4h"

[[staff]]
address = "ann@example.org"
language = "en"

[[staff]]
address = "boss@example.org"
language = "zh-CN"
"""
# Only the acceptance clock in play: the first-response clock is far away.
ACCEPTANCE_ONLY = '[sla]\nfirst_response = "30 days"\n'
_numbers = count(1)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=SH).astimezone(UTC)  # type: ignore[misc]


def open_case(
    app: App, *, priority: str = "normal", assignee: str | None = "ann@example.org"
) -> int:
    now = app.clock.now()
    with app.sessions.begin() as session:
        ticket = Ticket(
            number=f"TS-20261124-{next(_numbers):04d}",
            status="received",
            channel="email",
            language="zh-CN",
            priority=priority,
            subject="电压力锅漏气",
            complainant_email="wang@example.org",
            source="test",
            reply_token=f"{next(_numbers):016x}",
            created_at=now,
            updated_at=now,
            assignee=assignee,
            extra={},
            **sla.initial_dues(app.config, app.calendar, priority, now),
        )
        session.add(ticket)
        session.flush()
        return ticket.id


def sweep(app: App) -> int:
    with app.sessions.begin() as session:
        return sla.sweep(session, app.services, app.clock.now())


def mails(app: App, kind: str | None = None) -> list[OutboxMessage]:
    with app.reads() as session:
        query = select(OutboxMessage).order_by(OutboxMessage.id)
        if kind:
            query = query.where(OutboxMessage.kind == kind)
        return list(session.scalars(query))


def ticket(app: App, ticket_id: int) -> Ticket:
    with app.reads() as session:
        found = session.get(Ticket, ticket_id)
        assert found is not None
        return found


def test_complaint_before_golden_week_is_due_on_the_third_official_working_day() -> None:
    config = configmod.load(None)
    calendar = WorkCalendar(config.sla.calendar, config.timezone)
    received = datetime(2026, 9, 30, 16, 0, tzinfo=SH)
    dues = sla.initial_dues(config, calendar, "normal", received)
    assert dues["due_acceptance"] is not None
    # 1-7 October off; Thu 8, Fri 9 and the make-up Saturday 10 October are the three days.
    assert dues["due_acceptance"].astimezone(SH) == datetime(2026, 10, 10, 16, 0, tzinfo=SH)
    assert dues["due_first_response"] == received + timedelta(hours=24)
    assert dues["sla_next_check_at"] is not None


def test_moving_past_each_deadline_mails_reminder_and_daily_urging_once_each(make_app) -> None:
    app: App = make_app(STAFF + ACCEPTANCE_ONLY)
    case = open_case(app)  # Tue 24 Nov 10:00, acceptance due Fri 27 Nov 10:00
    taken: dict[datetime, int] = {}
    app.clock.set(at(2026, 11, 24, 10, 0))
    while app.clock.now() < at(2026, 12, 1, 12, 0):
        app.clock.move(timedelta(minutes=30))
        n = sweep(app)
        if n:
            taken[app.clock.now()] = n
    reminders = mails(app, "reminder")
    assert [(m.recipient, m.created_at) for m in reminders] == [
        # 80% of the way falls on Thu 19:36: deferred to the next working morning.
        ("ann@example.org", at(2026, 11, 27, 9, 0)),
        # "urge again": each working morning after the breach, not on the weekend.
        ("ann@example.org", at(2026, 11, 30, 9, 0)),
        ("ann@example.org", at(2026, 12, 1, 9, 0)),
    ]
    assert "Reminder" in reminders[0].subject and "Overdue" in reminders[1].subject
    assert mails(app, "escalation") == []  # not urgent: level 1 and 2 go into the digest
    assert taken[at(2026, 11, 27, 10, 0)] == 1  # level 1 at the breach
    assert taken[at(2026, 11, 27, 14, 0)] == 1  # level 2 four hours later
    assert ticket(app, case).escalation_level == 2
    with app.reads() as session:
        steps = session.scalars(select(EscalationStep.step).order_by(EscalationStep.id)).all()
    assert steps == ["remind", "level1", "level2", "daily:2026-11-30", "daily:2026-12-01"]


def test_urgent_case_mails_supervisors_at_once_even_at_night(make_app) -> None:
    app: App = make_app(
        STAFF + ACCEPTANCE_ONLY + '[sla.urgent]\nacceptance = "2h"\nfirst_response = "30 days"\n'
    )
    app.clock.set(at(2026, 11, 27, 21, 0))  # Friday evening
    open_case(app, priority="urgent")  # due 23:00, reminder at 22:36
    for moment in ((22, 0), (22, 40), (22, 50), (23, 5), (23, 30), (3, 5), (3, 30)):
        day = 27 if moment[0] >= 21 else 28
        app.clock.set(at(2026, 11, day, *moment))
        sweep(app)
    reminders = mails(app, "reminder")
    assert [(m.recipient, m.created_at) for m in reminders] == [
        ("ann@example.org", at(2026, 11, 27, 22, 40))
    ]
    escalations = mails(app, "escalation")
    assert sorted((m.recipient, m.created_at) for m in escalations) == sorted(
        [
            ("boss@example.org", at(2026, 11, 27, 23, 5)),
            ("safety@example.org", at(2026, 11, 27, 23, 5)),
            ("boss@example.org", at(2026, 11, 28, 3, 5)),
            ("safety@example.org", at(2026, 11, 28, 3, 5)),
        ]
    )
    boss_first = next(m for m in escalations if m.recipient == "boss@example.org")
    assert "1级督办" in boss_first.subject  # boss reads Chinese, per [[staff]] language
    assert b"Auto-Submitted: auto-generated" in boss_first.raw


def test_unassigned_case_reminds_the_supervisors(make_app) -> None:
    app: App = make_app(STAFF + ACCEPTANCE_ONLY)
    open_case(app, assignee=None)
    app.clock.set(at(2026, 11, 27, 9, 30))
    assert sweep(app) == 1
    assert [m.recipient for m in mails(app, "reminder")] == ["boss@example.org"]


def test_sweeping_twice_or_after_a_restart_takes_no_step_again(make_app, tmp_path: Path) -> None:
    app: App = make_app(STAFF + ACCEPTANCE_ONLY)
    open_case(app)
    app.clock.set(at(2026, 11, 27, 9, 30))
    assert sweep(app) == 1  # the reminder
    app.clock.set(at(2026, 11, 30, 9, 30))  # past level 1, level 2, and Monday's urging
    assert sweep(app) == 3
    assert sweep(app) == 0
    restarted: App = make_app(STAFF + ACCEPTANCE_ONLY, root=tmp_path)
    assert sweep(restarted) == 0
    assert len(mails(restarted, "reminder")) == 2  # reminder and Monday's urging, once each
    with app.reads() as session:
        assert session.scalar(select(func.count()).select_from(EscalationStep)) == 4


def test_two_instances_racing_take_each_step_once(make_app, tmp_path: Path) -> None:
    first: App = make_app(STAFF + ACCEPTANCE_ONLY)
    second: App = make_app(STAFF + ACCEPTANCE_ONLY, root=tmp_path)
    for _ in range(5):
        open_case(first)
    first.clock.set(at(2026, 11, 30, 9, 30))
    barrier = threading.Barrier(2)
    results: list[int] = []

    def run(app: App) -> None:
        barrier.wait()
        results.append(sweep(app))

    threads = [threading.Thread(target=run, args=(a,)) for a in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(results) == 5 * 3  # level 1, level 2, Monday's urging (the reminder is moot)
    assert len(mails(first, "reminder")) == 5
    assert sweep(first) == 0 and sweep(second) == 0


def test_a_recorded_step_is_not_recorded_again(make_app) -> None:
    app: App = make_app(STAFF)
    case = open_case(app)
    step = sla.Step("acceptance", at(2026, 11, 27, 10, 0), "level1", at(2026, 11, 27, 10, 0))
    with app.sessions.begin() as session:
        assert sla._record(session, case, step, app.clock.now()) is not None
    with app.sessions.begin() as session:
        assert sla._record(session, case, step, app.clock.now()) is None


def test_waiting_pauses_the_clock_and_resuming_excludes_the_paused_working_time(make_app) -> None:
    app: App = make_app(STAFF + ACCEPTANCE_ONLY)
    case = open_case(app)
    assert ticket(app, case).due_acceptance == at(2026, 11, 27, 10, 0)
    app.clock.set(at(2026, 11, 25, 10, 0))  # Wednesday: ask the consumer for information
    with app.sessions.begin() as session:
        t = session.get(Ticket, case)
        assert t is not None
        apply_transition(session, app.services, t, "waiting", actor="ann", now=app.clock.now())
    assert ticket(app, case).sla_next_check_at is None
    app.clock.set(at(2026, 11, 28, 12, 0))  # past the old deadline: nothing happens
    assert sweep(app) == 0
    assert mails(app, "reminder") == []
    app.clock.set(at(2026, 11, 30, 10, 0))  # Monday: the consumer answered
    with app.sessions.begin() as session:
        t = session.get(Ticket, case)
        assert t is not None
        apply_transition(session, app.services, t, "received", actor="wang", now=app.clock.now())
    resumed = ticket(app, case)
    # Paused Wed 10:00 -> Mon 10:00 is three working days (Sat, Sun off): due moves 3 days on.
    assert resumed.due_acceptance == at(2026, 12, 2, 10, 0)
    assert resumed.sla_paused_at is None
    assert resumed.sla_next_check_at is not None
    assert resumed.sla_next_check_at > app.clock.now()


def test_accepting_starts_resolution_and_closing_stops_every_clock(make_app) -> None:
    app: App = make_app(STAFF)
    case = open_case(app)
    with app.sessions.begin() as session:
        t = session.get(Ticket, case)
        assert t is not None
        apply_transition(session, app.services, t, "accepted", actor="ann", now=app.clock.now())
    accepted = ticket(app, case)
    assert accepted.due_acceptance is None and accepted.due_first_response is None
    assert accepted.due_resolution == app.clock.now() + timedelta(days=15)
    with app.sessions.begin() as session:
        t = session.get(Ticket, case)
        assert t is not None
        apply_transition(session, app.services, t, "resolved", actor="ann", now=app.clock.now())
    done = ticket(app, case)
    assert (done.due_resolution, done.sla_next_check_at) == (None, None)


def test_raising_the_priority_moves_open_deadlines_to_the_new_policy(make_app) -> None:
    app: App = make_app(STAFF + '[sla.urgent]\nacceptance = "2 working hours"\n')
    case = open_case(app)
    with app.sessions.begin() as session:
        t = session.get(Ticket, case)
        assert t is not None
        t.priority = "urgent"
        sla.on_priority_change(t, app.services, app.clock.now())
    raised = ticket(app, case)
    assert raised.due_acceptance == app.clock.now() + timedelta(hours=2)
    assert raised.sla_next_check_at is not None
    assert raised.sla_next_check_at <= app.clock.now() + timedelta(hours=2)


def test_business_hours_defer_reminders_to_the_next_working_morning(make_app) -> None:
    app: App = make_app(STAFF + '[sla]\nfirst_response = "18h"\nbusiness_hours = "08:30-17:30"\n')
    app.clock.set(at(2026, 11, 24, 17, 0))
    case = open_case(app)
    opened = ticket(app, case)
    # 3 working days of 9 business hours: Tue 0.5 h, Wed 9, Thu 9, Fri 8.5 -> Fri 17:00.
    assert opened.due_acceptance == at(2026, 11, 27, 17, 0)
    assert opened.due_first_response == at(2026, 11, 25, 11, 0)
    app.clock.set(at(2026, 11, 25, 8, 0))  # the 80% mark (07:24) is before opening time
    assert sweep(app) == 0
    app.clock.set(at(2026, 11, 25, 8, 31))
    assert sweep(app) == 1
    assert [m.created_at for m in mails(app, "reminder")] == [at(2026, 11, 25, 8, 31)]


def test_each_step_is_on_the_case_timeline_with_its_level_clock_and_who_was_told(
    make_app,
) -> None:
    app: App = make_app(
        STAFF + ACCEPTANCE_ONLY + '[sla.urgent]\nacceptance = "2h"\nfirst_response = "30 days"\n'
    )
    app.clock.set(at(2026, 11, 27, 21, 0))
    case_id = open_case(app, priority="urgent")
    for moment in ((22, 40), (23, 5)):
        app.clock.set(at(2026, 11, 27, *moment))
        sweep(app)
    with app.sessions() as session:
        case = session.get(Ticket, case_id)
        assert case is not None
        shown = ticket_json(case, app.config.timezone, timeline=True)["timeline"]
    steps = [e["escalation"] for e in shown if e["kind"] == "escalation"]
    assert steps == [
        {"level": 0, "clock": "acceptance", "step": "remind", "told": ["ann@example.org"]},
        {
            "level": 1,
            "clock": "acceptance",
            "step": "level1",
            "told": ["boss@example.org", "safety@example.org"],
        },
    ]
