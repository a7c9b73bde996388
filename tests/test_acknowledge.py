"""The Acknowledge step called directly: one ack per new case, never for robots or old mail."""

from __future__ import annotations

import email
import sqlite3
from datetime import timedelta
from email import policy
from email.utils import format_datetime

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from daemon.store.models import OutboxMessage, Ticket, TimelineEntry
from handlers.acknowledge import Acknowledge
from handlers.context import Context
from handlers.intake import OpenOrThread, open_ticket

ENGLISH = "Hello, the kettle I bought leaks after three days. I want my money back."
CHINESE = "您好，我买的电水壶用了三天就漏水，底座坏了。要求退货退款。"
ESSENTIALS = '[tickets]\nmail_essentials = ["name", "respondent", "purchase", "description"]\n'


def outbox(ctx: Context) -> list[OutboxMessage]:
    return list(ctx.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def opened(step_ctx, mail) -> Context:  # noqa: ANN001
    """A context whose new case OpenOrThread has just opened, as in the live pipeline."""
    ctx = step_ctx(mail)
    OpenOrThread().process(ctx)
    assert ctx.new_ticket and ctx.ticket is not None
    return ctx


@pytest.mark.parametrize(
    ("body", "language", "subject"),
    [
        (ENGLISH, "en", "We have received your complaint: Kettle"),
        (CHINESE, "zh-CN", "我们已收到您的投诉：Kettle"),
    ],
)
def test_a_new_case_gets_one_ack_in_its_language_threaded_on_the_consumers_mail(
    step_ctx, body: str, language: str, subject: str
) -> None:
    mail = step_ctx.mail("li@example.org", body, message_id="<first@example.org>")
    ctx = opened(step_ctx, mail)
    assert ctx.ticket is not None and ctx.ticket.language == language

    Acknowledge().process(ctx)

    [row] = outbox(ctx)
    number = ctx.ticket.number
    assert (row.kind, row.intent, row.recipient) == ("ack", f"ack:{number}", "li@example.org")
    assert row.automatic and row.status == "queued"
    sent = email.message_from_bytes(row.raw, policy=policy.default)
    assert sent["Subject"] == f"[{number}] {subject}"
    assert sent["In-Reply-To"] == "<first@example.org>"
    assert "<first@example.org>" in sent["References"]
    assert sent["Auto-Submitted"] == "auto-replied"
    case = ctx.session.get(Ticket, ctx.ticket.id)
    assert case is not None and case.acknowledged_at == ctx.now and case.status == "received"
    out = ctx.session.scalars(
        select(TimelineEntry).where(TimelineEntry.kind == "message_out")
    ).one()
    assert out.message_id == row.message_id and out.data == {"mail_kind": "ack"}


def test_a_case_missing_registration_details_is_asked_for_them_and_waits(step_ctx) -> None:
    step_ctx.configure(ESSENTIALS)
    ctx = opened(step_ctx, step_ctx.mail("li@example.org", "It leaks.", message_id="<a@x.org>"))
    assert ctx.prep.missing  # the short mail names no respondent, purchase or name

    Acknowledge().process(ctx)

    [row] = outbox(ctx)  # the request is the consumer's mail for the move: no second one
    assert (row.kind, row.intent) == ("request_info", f"ack:{ctx.ticket.number}")  # type: ignore[union-attr]
    assert email.message_from_bytes(row.raw, policy=policy.default)["In-Reply-To"] == "<a@x.org>"
    case = ctx.session.get(Ticket, ctx.ticket.id)  # type: ignore[union-attr]
    assert case is not None and case.status == "waiting" and ctx.ticket is case
    assert case.extra["resume_to"] == "received" and case.acknowledged_at == ctx.now
    move = ctx.session.scalars(select(TimelineEntry).where(TimelineEntry.kind == "status")).one()
    assert move.data == {"from": "received", "to": "waiting"} and move.actor == "caseloop"
    assert move.text is not None and "registration details missing" in move.text


def test_robot_mail_is_never_acknowledged(step_ctx) -> None:
    robot = step_ctx.mail("li@example.org", ENGLISH, Auto_Submitted="auto-replied")
    ctx = step_ctx(robot)
    assert ctx.prep.automatic
    # OpenOrThread sets robot mail matching no case aside; the step must hold on its own.
    ctx.ticket = open_ticket(ctx, email="li@example.org", name=None, subject="Kettle")
    ctx.new_ticket = True

    Acknowledge().process(ctx)

    assert outbox(ctx) == []
    case = ctx.session.get(Ticket, ctx.ticket.id)
    assert case is not None and case.acknowledged_at is None


def test_mail_older_than_ack_max_age_gets_no_ack_but_a_note(step_ctx) -> None:
    step_ctx.configure('[intake]\nack_max_age = "48h"\n')
    written = step_ctx.clock.now() - timedelta(hours=49)
    ctx = opened(step_ctx, step_ctx.mail("li@example.org", ENGLISH, Date=format_datetime(written)))

    Acknowledge().process(ctx)

    assert outbox(ctx) == []
    number = ctx.ticket.number  # type: ignore[union-attr]
    assert ctx.prep.notes == [f"{number}: not acknowledged, mail older than ack_max_age"]
    case = ctx.session.get(Ticket, ctx.ticket.id)  # type: ignore[union-attr]
    assert case is not None and case.acknowledged_at is None and case.status == "received"


def test_mail_just_within_ack_max_age_is_acknowledged(step_ctx) -> None:
    step_ctx.configure('[intake]\nack_max_age = "48h"\n')
    written = step_ctx.clock.now() - timedelta(hours=47)
    ctx = opened(step_ctx, step_ctx.mail("li@example.org", ENGLISH, Date=format_datetime(written)))
    Acknowledge().process(ctx)
    assert [r.kind for r in outbox(ctx)] == ["ack"] and not ctx.prep.notes


def test_a_reply_on_a_known_case_is_not_acknowledged(step_ctx) -> None:
    first = opened(step_ctx, step_ctx.mail("li@example.org", ENGLISH))
    Acknowledge().process(first)
    number, case_id = first.ticket.number, first.ticket.id  # type: ignore[union-attr]

    step_ctx.clock.move(timedelta(hours=1))
    answer = step_ctx.mail("li@example.org", "Any news?", f"Re: [{number}] Kettle")
    reply = step_ctx(answer, case_id)
    OpenOrThread().process(reply)
    assert not reply.new_ticket
    Acknowledge().process(reply)

    assert [r.intent for r in outbox(reply)] == [f"ack:{number}"]


def test_a_second_run_of_the_step_cannot_queue_a_second_ack(step_ctx) -> None:
    ctx = opened(step_ctx, step_ctx.mail("li@example.org", ENGLISH))
    Acknowledge().process(ctx)
    # The case was opened in this transaction, so queue_mail skips the intent look-up and
    # the outbox's unique intent is the guard: the second insert is refused, not queued.
    # (The store's fast path raises the driver's error, not SQLAlchemy's wrapper of it.)
    with pytest.raises((IntegrityError, sqlite3.IntegrityError)), ctx.session.begin_nested():
        Acknowledge().process(ctx)
    assert [r.intent for r in outbox(ctx)] == [f"ack:{ctx.ticket.number}"]  # type: ignore[union-attr]
