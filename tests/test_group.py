"""Group complaints: many complainants against one respondent make a new case urgent."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage

from daemon.app import App
from daemon.items import Incoming
from daemon.store.models import Ticket
from handlers.context import Context, Prepared
from handlers.group import GroupComplaint, is_group_complaint
from handlers.intake import OpenOrThread
from handlers.pipeline import prepare
from handlers.register import normalise_respondent


class _Blobs:
    def put(self, data: bytes) -> str:
        return "0" * 64


def _prepared(app: App, sender: str, body: str) -> Prepared:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "support@example.com", "Kettle"
    msg["Message-ID"] = f"<{sender}.kettle@example.org>"
    msg.set_content(body)
    item = Incoming(source="t", key=sender, raw=msg.as_bytes(), label="t")
    return prepare(item, app.config, _Blobs())


def _decide(app: App, prep: Prepared, steps: list[object]) -> Context:
    """Run `steps` on the prepared item in one committed transaction, as intake does."""
    with app.sessions.begin() as session:
        ctx = Context(prep=prep, services=app.services, session=session, clock=app.clock,
                      now=app.clock.now())  # fmt: skip
        for step in steps:
            step.process(ctx)  # type: ignore[attr-defined]
    return ctx


def _ticket(app: App, n: int, email: str, respondent: str | None, age: timedelta) -> None:
    now = app.clock.now()
    with app.sessions.begin() as session:
        session.add(
            Ticket(
                number=f"OLD-{n:04d}",
                status="received",
                channel="email",
                language="zh-CN",
                subject="x",
                complainant_email=email,
                respondent=respondent,
                respondent_key=normalise_respondent(respondent) if respondent else None,
                source="t",
                reply_token=f"{n:016d}",
                created_at=now - age,
                updated_at=now - age,
                extra={},
            )
        )


def test_respondents_compare_in_normalised_form() -> None:
    assert normalise_respondent(" 恒盛地产有限公司 ") == normalise_respondent("恒盛地产公司")
    assert normalise_respondent("ＡＣＭＥ Store Inc.") == normalise_respondent("acme")
    assert normalise_respondent("美的官方旗舰店") == normalise_respondent("美的")
    assert normalise_respondent("小米之家") != normalise_respondent("小米")


def test_group_complaint_counts_distinct_complainants_in_the_window(make_app) -> None:
    app: App = make_app('[escalation]\ngroup_threshold = 3\ngroup_window = "7 days"\n')
    day = timedelta(days=1)
    _ticket(app, 1, "a@example.cn", "恒盛地产有限公司", 1 * day)
    _ticket(app, 2, "A@Example.cn ", "恒盛地产公司", 2 * day)  # the same person again
    _ticket(app, 3, "b@example.cn", "其他公司", 1 * day)
    _ticket(app, 4, "c@example.cn", "恒盛地产有限公司", 8 * day)  # outside the window
    _ticket(app, 5, "d@example.cn", None, 1 * day)
    now = app.clock.now()
    with app.sessions.begin() as session:
        # a and the newcomer: two of three
        assert not is_group_complaint(session, app.config, "恒盛地产", "new@example.cn", now)
    _ticket(app, 6, "e@example.cn", "\u3000恒盛地产 有限公司\u3000", 3 * day)
    _ticket(app, 7, "f@example.cn", "恒盛地产集团有限公司", 3 * day)
    with app.sessions.begin() as session:
        assert is_group_complaint(session, app.config, "恒盛地产", "new@example.cn", now)
        assert not is_group_complaint(session, app.config, "其他公司", "new@example.cn", now)


def test_group_complaint_step_makes_a_new_case_urgent_with_urgent_deadlines(make_app) -> None:
    app: App = make_app("[escalation]\ngroup_threshold = 2\n")
    _ticket(app, 1, "a@example.org", "Acme Ltd", timedelta(hours=5))
    prep = _prepared(app, "b@example.org", "Complaint against ACME. The kettle leaks.")
    assert prep.fields["respondent"] == "ACME" and prep.priority == "normal"

    ctx = _decide(app, prep, [GroupComplaint(), OpenOrThread()])

    assert ctx.new_ticket and ctx.ticket is not None
    with app.reads() as session:
        case = session.get(Ticket, ctx.ticket.id)
        assert case is not None
        assert case.priority == "urgent" and case.extra["group_complaint"] is True
        urgent = app.config.sla.policy("urgent")
        assert case.due_first_response == app.calendar.add(ctx.now, urgent.first_response)
    assert any("group complaint" in note for note in prep.notes)
    assert prep.priority == "normal"  # a decision for the case it opens, not a rewrite of prep


def test_group_complaint_step_leaves_replies_and_lone_complaints_alone(make_app) -> None:
    app: App = make_app("[escalation]\ngroup_threshold = 3\n")
    _ticket(app, 1, "a@example.org", "Acme Ltd", timedelta(hours=5))
    lone = _decide(app, _prepared(app, "b@example.org", "Complaint against ACME. It leaks."),
                   [GroupComplaint(), OpenOrThread()])  # fmt: skip
    assert lone.ticket is not None and lone.ticket.priority == "normal"
    # A reply on an existing case (ctx.ticket found, not new) is never a group complaint.
    reply = _prepared(app, "c@example.org", "Complaint against ACME. It leaks too.")
    with app.sessions.begin() as session:
        existing = session.get(Ticket, lone.ticket.id)
        ctx = Context(prep=reply, services=app.services, session=session, clock=app.clock,
                      now=app.clock.now(), ticket=existing)  # fmt: skip
        GroupComplaint().process(ctx)
        assert existing is not None and existing.priority == "normal"
    assert not reply.notes


def test_a_group_found_in_a_batch_is_remembered_until_a_savepoint_rolls_back(make_app) -> None:
    app: App = make_app("[escalation]\ngroup_threshold = 2\n")
    _ticket(app, 1, "a@example.org", "Acme Ltd", timedelta(hours=5))
    now = app.clock.now()
    with app.sessions.begin() as session:
        savepoint = session.begin_nested()
        # b makes two: within this batch Acme stays a group, as b's case is about to open ...
        assert is_group_complaint(session, app.config, "Acme", "b@example.org", now)
        assert is_group_complaint(session, app.config, "Acme", "a@example.org", now)
        # ... unless b's item rolled back: then a alone is one complainant again.
        savepoint.rollback()
        assert not is_group_complaint(session, app.config, "Acme", "a@example.org", now)
