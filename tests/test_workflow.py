"""The case lifecycle (SPEC §4): every allowed move works and tells the consumer; no other does."""

from __future__ import annotations

import email
import itertools
from datetime import timedelta
from email import policy

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from daemon.app import App
from daemon.store.models import OutboxMessage, Ticket, TimelineEntry
from handlers import staff
from handlers.workflow import STATUSES, TransitionRefused, apply_transition, check_transition

# SPEC §4 written out by hand: received -> accepted | rejected; accepted -> in_progress <->
# waiting -> resolved -> closed; reopening (an appeal) goes back to in_progress. `waiting` is
# also where a case waits for registration details before acceptance.
LIFECYCLE = {
    ("received", "accepted"): "accepted",
    ("received", "rejected"): "rejected",
    ("received", "waiting"): "info_requested",
    ("accepted", "in_progress"): None,  # told only with [tickets] notify_in_progress
    ("accepted", "waiting"): "info_requested",
    ("accepted", "resolved"): "resolved",
    ("in_progress", "waiting"): "info_requested",
    ("in_progress", "resolved"): "resolved",
    ("waiting", "received"): None,  # the consumer's answer: they wrote it, no mail back
    ("waiting", "in_progress"): None,
    ("waiting", "resolved"): "resolved",
    ("resolved", "closed"): "closed",
    ("resolved", "in_progress"): "reopened",
    ("rejected", "closed"): None,
    ("closed", "in_progress"): "reopened",
}


def _case(session: Session, app: App, status: str, n: int, language: str = "en") -> Ticket:
    now = app.clock.now()
    ticket = Ticket(
        number=f"TS-20261124-{n:04d}",
        status=status,
        channel="email",
        category="product_quality",
        priority="normal",
        language=language,
        subject="Kettle leaks",
        complainant_name="Li Lei",
        complainant_email=f"c{n}@example.net",
        source="local",
        reply_token=f"tok{n:05d}",
        created_at=now,
        updated_at=now,
        extra={},
    )
    session.add(ticket)
    session.flush()
    return ticket


# Where a waiting case came from, for each way out of waiting the lifecycle allows.
CAME_FROM = {"received": "received", "in_progress": "in_progress", "resolved": "accepted"}


def test_the_table_is_the_spec_lifecycle() -> None:
    for old, new in itertools.product(STATUSES, STATUSES):
        ticket = Ticket(number="TS-20261124-0001", status=old)
        ticket.extra = {"resume_to": CAME_FROM.get(new, "in_progress")}
        if (old, new) in LIFECYCLE:
            check_transition(ticket, new)
        else:
            with pytest.raises(TransitionRefused):
                check_transition(ticket, new)


def test_each_allowed_move_is_recorded_and_mails_the_consumer_what_it_should(make_app) -> None:
    app: App = make_app()
    now = app.clock.now()
    with app.sessions.begin() as session:
        cases = {}
        for n, (old, new) in enumerate(LIFECYCLE, start=1):
            ticket = _case(session, app, old, n)
            if old == "waiting":
                ticket.extra = {"resume_to": CAME_FROM[new]}
            cases[(old, new)] = ticket.id
            apply_transition(
                session,
                app.services,
                ticket,
                new,
                actor="agent@example.com",
                now=now,
                reason="b2b" if new == "rejected" else None,
            )
    with app.sessions() as session:
        for (old, new), ticket_id in cases.items():
            ticket = session.get(Ticket, ticket_id)
            assert ticket is not None and ticket.status == new
            (move,) = [e for e in ticket.timeline if e.kind == "status"]
            assert move.data == {"from": old, "to": new}
            assert move.actor == "agent@example.com" and move.at == now
            kinds = session.scalars(
                select(OutboxMessage.kind).where(OutboxMessage.ticket_id == ticket_id)
            ).all()
            expected = LIFECYCLE[(old, new)]
            assert kinds == ([expected] if expected else []), (old, new)
            if new in ("resolved", "closed") or old in ("resolved", "closed"):
                assert ticket.resolved_at == (now if new == "resolved" else None)
        reopened = session.get(Ticket, cases[("closed", "in_progress")])
        assert reopened is not None and reopened.reopened_count == 1
        assert reopened.due_resolution is not None and reopened.closed_at is None


@pytest.mark.parametrize(
    ("came_from", "refused"),
    [("received", ["in_progress", "resolved"]), ("accepted", ["received"])],
)
def test_a_waiting_case_goes_back_only_where_it_came_from(
    came_from: str, refused: list[str]
) -> None:
    """A case waiting for details before any decision is decided next; an accepted case that
    waits on the consumer can never be rejected by a detour through `received`."""
    ticket = Ticket(number="TS-20261124-0001", status="waiting", extra={"resume_to": came_from})
    for new in refused:
        with pytest.raises(TransitionRefused, match=f"cannot go from waiting to {new}"):
            check_transition(ticket, new)


def test_a_refused_move_changes_nothing(make_app) -> None:
    app: App = make_app()
    with app.sessions.begin() as session:
        ticket_id = _case(session, app, "received", 1).id
    with app.sessions.begin() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        with pytest.raises(TransitionRefused, match="cannot go from received to closed"):
            staff.set_fields(
                session,
                app.services,
                ticket,
                actor="agent@example.com",
                now=app.clock.now(),
                priority="urgent",
                status="closed",
            )
        with pytest.raises(TransitionRefused, match="needs a reason"):
            apply_transition(
                session, app.services, ticket, "rejected", actor="x", now=app.clock.now()
            )
    with app.sessions() as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        assert (ticket.status, ticket.priority) == ("received", "normal")
        assert session.scalar(select(func.count()).select_from(TimelineEntry)) == 0
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 0


@pytest.mark.parametrize(
    ("language", "words"),
    [
        ("en", "a purchase dispute between businesses"),
        ("zh-CN", "属于经营者之间的购销纠纷"),
    ],
)
def test_a_rejection_states_its_reason_in_the_consumers_language(
    make_app, language: str, words: str
) -> None:
    app: App = make_app()
    with app.sessions.begin() as session:
        ticket = _case(session, app, "received", 1, language=language)
        apply_transition(
            session, app.services, ticket, "rejected", actor="a", now=app.clock.now(), reason="b2b"
        )
        row = session.scalars(select(OutboxMessage)).one()
    mail = email.message_from_bytes(row.raw, policy=policy.default)
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert words in text and words in html
    assert row.kind == "rejected" and mail["Auto-Submitted"] is None  # a person decided


def test_acceptance_notice_states_the_resolution_deadline(make_app) -> None:
    app: App = make_app()
    now = app.clock.now()
    with app.sessions.begin() as session:
        ticket = _case(session, app, "received", 1, language="zh-CN")
        apply_transition(session, app.services, ticket, "accepted", actor="a", now=now)
        assert ticket.due_resolution == now + timedelta(days=15)
        assert ticket.first_response_at == now  # the notice is the first answer
        row = session.scalars(select(OutboxMessage)).one()
    mail = email.message_from_bytes(row.raw, policy=policy.default)
    text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "已正式受理" in text and "2026年12月09日前" in text and "15天" in text


def test_in_progress_mail_is_sent_only_when_configured(make_app) -> None:
    app: App = make_app("[tickets]\nnotify_in_progress = true\n")
    with app.sessions.begin() as session:
        ticket = _case(session, app, "accepted", 1)
        apply_transition(
            session, app.services, ticket, "in_progress", actor="a", now=app.clock.now()
        )
        assert session.scalars(select(OutboxMessage.kind)).all() == ["in_progress"]


def test_status_counts_overdue_cases_but_not_those_waiting_on_the_consumer(make_app) -> None:
    from daemon.cli import status_report

    app: App = make_app()
    past = app.clock.now() - timedelta(hours=1)
    with app.sessions.begin() as session:
        for n, status in enumerate(("received", "waiting", "accepted"), start=1):
            ticket = _case(session, app, status, n)
            ticket.due_first_response = past
            ticket.sla_next_check_at = past + timedelta(minutes=n)
    with app.sessions() as session:
        report = status_report(app, session)
    assert (report["cases"]["open"], report["cases"]["overdue"]) == (3, 2)
    assert report["next"]["sla_step"] == "2026-11-24T09:01:00+08:00"  # the earliest, local
    assert report["next"]["digest"] == "2026-11-25T09:00:00+08:00"
    assert report["next"]["survey"] is None
