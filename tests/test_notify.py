"""Mail we send: templates in both languages, RFC 3834 marks, threading headers, the hourly cap."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from daemon.app import App
from daemon.clock import parse_duration
from daemon.config import CATEGORIES, LANGUAGES, PRIORITIES
from daemon.store.models import OutboxMessage, Ticket
from handlers.notify import describe_duration, encoded_words, header_safe, queue_mail
from handlers.rejection import CODES, REASONS


@pytest.mark.parametrize(
    ("text", "language", "words"),
    [
        ("24h", "zh-CN", "24小时"),
        ("3 working days", "zh-CN", "3个工作日"),
        ("15 days", "en", "15 days"),
        ("1 working days", "en", "1 working day"),
    ],
)
def test_deadlines_read_naturally_in_each_language(text: str, language: str, words: str) -> None:
    assert describe_duration(parse_duration(text), language) == words


def test_header_safe_removes_line_breaks() -> None:
    assert header_safe("a\r\nBcc: x@example.org") == "a Bcc: x@example.org"


def _open_case(app: App, language: str) -> Ticket:
    now = app.clock.now()
    with app.sessions.begin() as session:
        ticket = Ticket(
            number=f"TS-20261124-{'0001' if language == 'en' else '0002'}",
            status="received",
            channel="email",
            language=language,
            subject="Broken kettle",
            complainant_email="jane@example.org",
            source="t",
            reply_token="a" * 16,
            created_at=now,
            updated_at=now,
            extra={},
        )
        session.add(ticket)
    return ticket


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_scheduled_mail_is_auto_generated_and_replies_are_auto_replied(
    make_app, language: str
) -> None:
    app: App = make_app()
    ticket = _open_case(app, language)
    with app.sessions.begin() as session:
        ticket = session.merge(ticket)
        for kind, automatic in (("ack", "auto-replied"), ("closed", "auto-generated")):
            queue_mail(
                session,
                app.config,
                app.templates,
                ticket=ticket,
                kind=kind,
                intent=f"{kind}:x",
                now=app.clock.now(),
                automatic=automatic,
                context={
                    "policy": app.config.sla.default,
                    "original_subject": "x",
                    "event": "accepted",
                    "reason": None,
                },
            )
        queue_mail(
            session,
            app.config,
            app.templates,
            ticket=ticket,
            kind="reply",
            intent="reply:x",
            now=app.clock.now(),
            automatic=None,
            context={"message": "We are on it."},
        )
    with app.sessions() as session:
        rows = {r.kind: r for r in session.scalars(select(OutboxMessage))}
    mails = {k: email.message_from_bytes(r.raw, policy=policy.default) for k, r in rows.items()}
    assert mails["ack"]["Auto-Submitted"] == "auto-replied"
    assert mails["closed"]["Auto-Submitted"] == "auto-generated"
    assert mails["reply"]["Auto-Submitted"] is None  # a person wrote it
    for mail in mails.values():
        assert mail["Reply-To"].startswith(f"support+{ticket.number}.")
        assert mail["Subject"].startswith(f"[{ticket.number}]")
        assert mail["X-Auto-Response-Suppress"] == "All"
        plain = mail.get_body(("plain",)).get_content()
        html = mail.get_body(("html",)).get_content()
        assert ticket.number in plain and ticket.number in html
    # later mail threads onto the earlier ones
    assert mails["ack"]["Message-ID"] in mails["reply"]["References"]


def test_automatic_mail_to_one_address_is_capped_per_hour(make_app) -> None:
    app: App = make_app("[intake]\nauto_mail_per_address_per_hour = 2\n")
    ticket = _open_case(app, "en")
    queued = []
    with app.sessions.begin() as session:
        ticket = session.merge(ticket)
        for i in range(4):
            queued.append(
                queue_mail(
                    session,
                    app.config,
                    app.templates,
                    ticket=ticket,
                    kind="ack",
                    intent=f"a{i}",
                    now=app.clock.now() + timedelta(minutes=i),
                    context={"policy": app.config.sla.default, "original_subject": "x"},
                )
            )
    assert [q is not None for q in queued] == [True, True, False, False]
    app.clock.move(timedelta(hours=2))  # type: ignore[attr-defined]
    with app.sessions.begin() as session:
        ticket = session.merge(ticket)
        assert (
            queue_mail(
                session,
                app.config,
                app.templates,
                ticket=ticket,
                kind="ack",
                intent="later",
                now=app.clock.now(),
                context={"policy": app.config.sla.default, "original_subject": "x"},
            )
            is not None
        )


@pytest.mark.parametrize(
    "subject",
    [
        "[TS-20261124-0001] 受理通知：您的投诉已受理",
        "[TS-20261124-0001] " + "电水壶漏水，要求退货退款。" * 12,
        "Réclamation: ça ne marche pas " * 4,
        "表情 😀😀😀 and words",
    ],
)
def test_non_ascii_subjects_are_encoded_words_that_read_back_exactly(subject: str) -> None:
    raw = f"Subject: {encoded_words(subject)}\r\n\r\nbody\r\n".encode("ascii")
    assert all(len(line) <= 78 for line in raw.split(b"\r\n"))
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert str(msg["Subject"]) == subject


@pytest.mark.parametrize("language", LANGUAGES)
def test_rejection_notice_and_staff_commands_follow_the_one_list_of_each(
    make_app, language: str
) -> None:
    app: App = make_app()
    ticket = _open_case(app, language)
    for reason in REASONS:
        mail = app.templates.render(
            "rejected", language, ticket=ticket, reason=reason.code, message=None
        )
        words = reason.for_consumer[language]
        assert words in mail.text and words in mail.html
    own = app.templates.render(
        "rejected", language, ticket=ticket, reason="sold by a ghost", message=None
    )
    assert "sold by a ghost" in own.text
    staff = app.templates.render("staff_error", language, ticket=ticket, problems=["#x"])
    lines = {line.split()[0]: line for line in staff.text.splitlines() if line.startswith("  #")}
    assert all(code in lines["#reject"] for code in CODES)
    assert all(priority in lines["#priority"] for priority in PRIORITIES)
    assert all(category in lines["#category"] for category in CATEGORIES)


@pytest.mark.parametrize(
    ("language", "message", "greeting"),
    [
        ("en", "Dear Daniel,\n\nWe refunded 299 yuan.", "Dear"),
        ("zh-CN", "李先生，您好！\n已为您退款299元。", "您好"),
    ],
)
def test_a_staff_members_own_greeting_is_not_doubled(
    make_app, language: str, message: str, greeting: str
) -> None:
    app: App = make_app()
    ticket = SimpleNamespace(
        number="TS-20261124-0001", subject="Kettle", complainant_name="Daniel Brooks"
    )
    mail = app.templates.render("reply", language, ticket=ticket, message=message)
    assert mail.text.count(greeting) <= 1 and message.splitlines()[-1] in mail.text
    assert "Daniel Brooks" in mail.text or language == "zh-CN"
