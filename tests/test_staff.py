"""Staff actions called directly on a case: what each records on the timeline and what it mails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.app import App
from daemon.store.models import OutboxMessage, Ticket, TimelineEntry
from handlers import staff
from handlers.intake import OpenOrThread
from handlers.workflow import TransitionRefused

STAFF = """
[sla.urgent]
first_response = "4h"

[escalation]
supervisors = ["lead@example.com"]
urgent_notify = ["compliance@example.com"]

[[staff]]
address = "wang@example.com"
groups = ["quality"]
language = "en"

[[staff]]
address = "zhao@example.com"
groups = ["quality"]
"""


@pytest.fixture
def case_id(step_ctx) -> int:  # noqa: ANN001
    """A case li@example.org opened an hour ago, unassigned, with its acknowledgement not sent."""
    step_ctx.configure(STAFF)
    ctx = step_ctx(step_ctx.mail("li@example.org", "The kettle leaks.", "Kettle"))
    OpenOrThread().process(ctx)
    assert ctx.ticket is not None
    step_ctx.commit()
    step_ctx.clock.move(timedelta(hours=1))
    return ctx.ticket.id


@contextmanager
def staff_action(app: App, case_id: int) -> Iterator[tuple[Session, Ticket]]:
    """The case in its own transaction, as a `caseloop` command has it."""
    with app.sessions.begin() as session:
        case = session.get(Ticket, case_id)
        assert case is not None
        yield session, case


def entries(session: Session, case: Ticket, kind: str) -> list[TimelineEntry]:
    found = select(TimelineEntry).where(
        TimelineEntry.ticket_id == case.id, TimelineEntry.kind == kind
    )
    return list(session.scalars(found.order_by(TimelineEntry.id)))


def mails(session: Session) -> list[tuple[str, str, bool]]:
    rows = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
    return [(r.kind, r.recipient, r.automatic) for r in rows]


def test_a_note_is_an_internal_timeline_entry_and_sends_nothing(step_ctx, case_id: int) -> None:
    app, now = step_ctx.app, step_ctx.clock.now()
    with staff_action(app, case_id) as (session, case):
        staff.note(session, case, "called the shop", actor="wang@example.com", now=now)
        [note] = entries(session, case, "note")
        assert (note.text, note.actor, note.internal, note.at) == (
            "called the shop",
            "wang@example.com",
            True,
            now,
        )
        assert case.updated_at == now and mails(session) == []


def test_category_and_priority_overrides_are_kept_on_the_timeline(step_ctx, case_id: int) -> None:
    app, now = step_ctx.app, step_ctx.clock.now()
    with staff_action(app, case_id) as (session, case):
        before = case.category
        changes = staff.set_fields(
            session, app.services, case, actor="wang@example.com", now=now,
            category="logistics", priority="high", reason="courier lost it",
        )  # fmt: skip
        assert changes == [
            f"category: {before} -> logistics (override)",
            "priority: normal -> high (override)",
        ]
        [note] = entries(session, case, "note")
        assert note.text == "; ".join(changes) + " (courier lost it)"
        assert note.data == {"changes": changes, "override": True}
        assert (case.category, case.priority) == ("logistics", "high")
        assert mails(session) == []  # only urgent alerts anyone


def test_raising_to_urgent_shortens_the_clocks_and_alerts_once(step_ctx, case_id: int) -> None:
    app, now = step_ctx.app, step_ctx.clock.now()
    with staff_action(app, case_id) as (session, case):
        opened_at, due = case.created_at, case.due_first_response
        staff.set_fields(session, app.services, case, actor="wang@example.com", now=now,
                         priority="urgent")  # fmt: skip
        urgent = app.config.sla.policy("urgent")
        assert case.due_first_response == app.calendar.add(opened_at, urgent.first_response)
        assert due is not None and case.due_first_response < due
        assert sorted(mails(session)) == [
            ("urgent", "compliance@example.com", True),
            ("urgent", "lead@example.com", True),
        ]
        # Already urgent: setting it again changes and sends nothing.
        assert staff.set_fields(session, app.services, case, actor="x", now=now,
                                priority="urgent") == []  # fmt: skip
        assert len(mails(session)) == 2


def test_assigning_tells_the_new_assignee_and_the_previous_one(step_ctx, case_id: int) -> None:
    app, now = step_ctx.app, step_ctx.clock.now()
    with staff_action(app, case_id) as (session, case):
        staff.set_fields(session, app.services, case, actor="lead@example.com", now=now,
                         assignee="WANG@example.com")  # fmt: skip
        assert case.assignee == "wang@example.com"
        assert mails(session) == [("assigned", "wang@example.com", True)]
        changes = staff.set_fields(session, app.services, case, actor="lead@example.com",
                                   now=now, assignee="zhao@example.com",
                                   reason="holiday")  # fmt: skip
        assert changes == ["assignee -> zhao@example.com"]
        assert mails(session)[1:] == [
            ("assigned", "zhao@example.com", True),
            ("unassigned", "wang@example.com", True),
        ]
        texts = [e.text for e in entries(session, case, "note")]
        assert texts == [
            "assignee: None -> wang@example.com",
            "assignee: wang@example.com -> zhao@example.com (holiday)",
        ]


def test_every_field_is_checked_before_anything_changes(step_ctx, case_id: int) -> None:
    app, now = step_ctx.app, step_ctx.clock.now()
    with staff_action(app, case_id) as (session, case):
        for bad in (
            {"priority": "high", "assignee": "stranger@example.com"},
            {"priority": "high", "category": "weather"},
            {"category": "logistics", "priority": "whenever"},
            {"priority": "high", "status": "resolved"},  # received cannot be resolved
            {"priority": "high", "status": "rejected"},  # a rejection needs a reason
        ):
            with pytest.raises(TransitionRefused):
                staff.set_fields(session, app.services, case, actor="x", now=now, **bad)
        assert (case.priority, case.status, case.assignee) == ("normal", "received", None)
        assert entries(session, case, "note") == [] and mails(session) == []


def test_a_status_change_is_recorded_and_mails_the_consumer(step_ctx, case_id: int) -> None:
    app, now = step_ctx.app, step_ctx.clock.now()
    with staff_action(app, case_id) as (session, case):
        changes = staff.set_fields(session, app.services, case, actor="wang@example.com",
                                   now=now, status="accepted",
                                   message="We will call the shop.")  # fmt: skip
        assert changes == ["status -> accepted"]
        [move] = entries(session, case, "status")
        assert move.data == {"from": "received", "to": "accepted"}
        assert move.text == "We will call the shop." and move.actor == "wang@example.com"
        assert mails(session) == [("accepted", "li@example.org", False)]  # a person's decision
        assert case.accepted_at == now and case.first_response_at == now


def test_a_staff_reply_is_mailed_to_the_consumer_and_answers_first(step_ctx, case_id: int) -> None:
    app, now = step_ctx.app, step_ctx.clock.now()
    with staff_action(app, case_id) as (session, case):
        staff.reply(session, app.services, case, "Which shop was it?", actor="wang@example.com",
                    now=now)  # fmt: skip
        staff.reply(session, app.services, case, "And when?", actor="wang@example.com", now=now)
        assert mails(session) == [("reply", "li@example.org", False)] * 2  # each its own mail
        [first, _] = entries(session, case, "message_out")
        assert first.text is not None and "Which shop was it?" in first.text
        assert case.first_response_at == now and case.due_first_response is None
        assert case.status == "received"


def test_a_reply_with_a_status_moves_the_case_without_a_second_mail(step_ctx, case_id: int) -> None:
    app, now = step_ctx.app, step_ctx.clock.now()
    with staff_action(app, case_id) as (session, case):
        staff.reply(session, app.services, case, "Please send the receipt.",
                    actor="wang@example.com", now=now, status="waiting")  # fmt: skip
        assert case.status == "waiting"
        # one mail: the request for details, carrying the reply (not also a plain reply)
        assert [m[0] for m in mails(session)] == ["info_requested"]
        [sent] = entries(session, case, "message_out")
        assert sent.text is not None and "Please send the receipt." in sent.text
        assert case.first_response_at == now
        with pytest.raises(TransitionRefused):
            staff.reply(session, app.services, case, "  ", actor="wang@example.com", now=now)


def test_nothing_is_done_on_an_erased_case(step_ctx, case_id: int) -> None:
    app, now = step_ctx.app, step_ctx.clock.now()
    with staff_action(app, case_id) as (session, case):
        case.erased_at = now
        for action in (
            lambda: staff.note(session, case, "x", actor="x", now=now),
            lambda: staff.reply(session, app.services, case, "x", actor="x", now=now),
            lambda: staff.set_fields(
                session, app.services, case, actor="x", now=now, priority="high"
            ),  # fmt: skip
        ):
            with pytest.raises(TransitionRefused, match="erased"):
                action()
        assert entries(session, case, "note") == [] and mails(session) == []
