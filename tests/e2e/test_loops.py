"""Robots that answer our mail never start a loop.

A consumer whose mailbox answers automatically files a complaint. caseloop runs in-process on a
MovableClock for one hour of simulated time (12 rounds of: take mail in and deliver the outbox,
let the relay carry every mail in flight, move the clock 5 minutes), sending through a real SMTP
relay (tests/relay.py) that hands our mail to the robot and the robot's answer back to the
support mailbox. Each robot gets exactly one mail from us, the acknowledgement, however often
it answers; its answers land on the case for staff only (or, naming no case, open none); the
case stays `received`, and a case waiting on the consumer keeps waiting.

The robots:
- a real Sieve vacation: Dovecot's own delivery agent (dovecot-lda, with the Pigeonhole plugin)
  runs the consumer's `vacation :days 1` script on our mail and submits its reply over SMTP
  (submission_host) back to the relay, which delivers it with dovecot-lda into the support
  mailbox caseloop reads over IMAP. Pigeonhole never answers our mail as sent (it carries
  Auto-Submitted and X-Auto-Response-Suppress); with those headers dropped on the way it
  answers once, and that answer must not be answered;
- a header-less "自动回复" responder answering every mail: with In-Reply-To, without it (to the
  envelope sender or to our Reply-To token), and with a fixed subject that keeps no case tag;
- a mail server that accepts our mail and then bounces it with an RFC 3464 DSN.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
from conftest import server_missing
from relay import (
    Delivery,
    Relay,
    dsn_bounce,
    edit_headers,
    headerless_autoreply,
    maildir_mailbox,
    stamped,
)
from sqlalchemy import select

from daemon.app import App
from daemon.clock import MovableClock
from daemon.store.models import OutboxMessage, SourceItem, Ticket, TimelineEntry

SUPPORT = "support@example.com"
ROUND = timedelta(minutes=5)
ROUNDS = 12  # one hour of simulated time


def smtp_config(relay: Relay) -> str:
    return f'[smtp]\nhost = "127.0.0.1"\nport = {relay.port}\nsecurity = "none"\n'


def file_complaint(relay: Relay, clock: MovableClock, consumer: str) -> str:
    """The consumer's complaint reaches the support mailbox through the relay."""
    msg = EmailMessage()
    msg["From"] = consumer
    msg["To"] = SUPPORT
    msg["Subject"] = "电热水壶漏水，要求退货"
    msg["Date"] = format_datetime(clock.now())
    msg["Message-ID"] = make_msgid(domain=consumer.partition("@")[2])
    msg.set_content("上周买的电热水壶底部漏水，订单号 2026111800042，要求退货退款。")
    relay.submit(consumer, SUPPORT, msg.as_bytes())
    relay.process()
    return str(msg["Message-ID"])


def case_status(app: App, consumer: str) -> str | None:
    """The status of the consumer's first case (a loop may have opened more)."""
    with app.sessions() as session:
        first = select(Ticket).where(Ticket.complainant_email == consumer).order_by(Ticket.id)
        ticket = session.scalars(first).first()
        return ticket.status if ticket else None


def run_an_hour(
    app: App,
    relay: Relay,
    clock: MovableClock,
    consumer: str,
    at_round: dict[int, Callable[[], None]] | None = None,
) -> list[str | None]:
    """12 rounds of intake + delivery + relay, 5 simulated minutes apart; the status after each.

    `at_round[i]` runs before round i's intake (a staff action, say).
    """
    statuses = []
    for round_no in range(ROUNDS + 1):  # the last round takes in what the 12th one carried
        if at_round and round_no in at_round:
            at_round[round_no]()
        app.run_once()
        relay.process()
        statuses.append(case_status(app, consumer))
        if round_no < ROUNDS:
            clock.move(ROUND)
    return statuses


def robot_mail(relay: Relay, complaint_id: str) -> list[Delivery]:
    """What reached the support mailbox besides the complaint: the robot's answers."""
    return [
        d
        for d in relay.log
        if d.rcpt.partition("@")[0].partition("+")[0] == "support"
        and d.header("Message-ID") != complaint_id
    ]


def assert_no_loop(
    app: App,
    relay: Relay,
    consumer: str,
    complaint_id: str,
    statuses: list[str | None],
    *,
    robot_mails: int,
    ours: int = 1,
    status: str = "received",
    on_case: bool = True,
) -> list[Delivery]:
    """We sent `ours` mails (the ack first), all to the consumer; every robot answer is on the
    case as an internal entry (or, `on_case=False`, set aside as robot mail matching no case);
    no new case, no rate-limit note, no status change."""
    sent = relay.sent_by(SUPPORT)
    assert [d.rcpt for d in sent] == [consumer] * ours, [d.header("Subject") for d in sent]
    with app.sessions() as session:
        tickets = session.scalars(select(Ticket)).all()
        assert [t.complainant_email for t in tickets] == [consumer], "a robot opened a case"
        ticket = tickets[0]
        outbox = session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all()
        assert outbox[0].kind == "ack" and len(outbox) == ours
        assert sent[0].header("Message-ID") == outbox[0].message_id
        assert (sent[0].header("Auto-Submitted") or "").startswith("auto-replied")
        timeline = list(ticket.timeline)
        outcomes = session.scalars(select(SourceItem.outcome)).all()
    assert set(statuses) == {status}, statuses
    answers = robot_mail(relay, complaint_id)
    assert len(answers) == robot_mails, [d.header("Subject") for d in answers]
    inbound = {e.message_id: e for e in timeline if e.direction == "in"}
    if not on_case:
        assert sorted(outcomes) == ["ignored"] * robot_mails + ["ticket"], outcomes
        assert not inbound.keys() & {a.header("Message-ID") for a in answers}
        return answers
    for answer in answers:
        entry = inbound.get(answer.header("Message-ID"))
        assert entry is not None, f"robot mail {answer.header('Subject')!r} is not on the case"
        assert entry.internal and entry.data.get("automatic"), (entry.actor, entry.data)
    assert not inbound[complaint_id].internal
    assert not [e.text for e in timeline if e.kind == "note" and "limit" in (e.text or "")], (
        "the hourly cap, not the loop guard, stopped an answer to a robot"
    )
    assert set(outcomes) == ({"ticket", "entry"} if robot_mails else {"ticket"}), outcomes
    return answers


# -- header-less auto-responder and bounce: robots at the relay, support mailbox a Maildir ----


# ids in pinyin: 自动回复 "automatic reply" (the subject the responder puts before ours),
# 休假通知 "vacation notice" (a fixed subject that keeps no case tag)
ROBOTS = [
    pytest.param(
        "wang.wu@example.net", "headerless", {"threaded": True}, id="zidonghuifu-in-reply-to"
    ),
    pytest.param(
        "wang.wu@example.net",
        "headerless",
        {"threaded": False, "answer_reply_to": True},
        id="zidonghuifu-no-in-reply-to-to-reply-token",
    ),
    pytest.param(
        "wang.wu@example.net",
        "headerless",
        {"threaded": False},
        id="zidonghuifu-no-in-reply-to",
    ),
    pytest.param(
        "wang.wu@example.net",
        "headerless",
        {"threaded": False, "answer_reply_to": True, "subject": "休假通知"},
        id="xiujiatongzhi-fixed-subject-to-reply-token",
    ),
    pytest.param(
        "wang.wu@example.net",
        "headerless",
        {"threaded": False, "subject": "休假通知"},
        id="xiujiatongzhi-fixed-subject-matching-no-case",
    ),
    pytest.param("no.such.user@example.net", "bounce", {}, id="dsn-bounce"),
]


@pytest.mark.parametrize(("consumer", "robot", "options"), ROBOTS)
def test_a_robot_gets_only_the_ack_in_an_hour_and_changes_no_status(
    make_app: Callable[..., App],
    relay: Relay,
    clock: MovableClock,
    consumer: str,
    robot: str,
    options: dict[str, Any],
) -> None:
    app = make_app(smtp_config(relay))
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    relay.route(SUPPORT, maildir_mailbox(inbox))
    if robot == "headerless":
        relay.route(consumer, headerless_autoreply(consumer, clock.now, **options))
    else:
        relay.route(consumer, dsn_bounce(clock.now))
    complaint_id = file_complaint(relay, clock, consumer)

    statuses = run_an_hour(app, relay, clock, consumer)

    # A fixed subject without In-Reply-To names no case unless it went to the reply token.
    on_case = "subject" not in options or bool(options.get("answer_reply_to"))
    answers = assert_no_loop(
        app, relay, consumer, complaint_id, statuses, robot_mails=1, on_case=on_case
    )
    if robot == "headerless":
        assert answers[0].mail_from == consumer  # a person's address, not the null sender
        assert answers[0].header("Auto-Submitted") is None
        assert answers[0].header("Precedence") is None
        assert (answers[0].header("In-Reply-To") is not None) == options["threaded"]
    else:
        with app.sessions() as session:
            ack = session.scalars(select(OutboxMessage)).one()
            assert ack.status == "bounced" and "5.1.1" in (ack.last_error or "")


def test_a_headerless_autoreply_to_a_staff_question_does_not_resume_a_waiting_case(
    make_app: Callable[..., App], relay: Relay, clock: MovableClock
) -> None:
    """Staff ask the consumer and wait; the robot's answer to that question is not the
    consumer's answer: the case keeps waiting and nothing goes back to the robot."""
    from handlers import staff

    consumer = "wang.wu@example.net"
    app = make_app(smtp_config(relay))
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    relay.route(SUPPORT, maildir_mailbox(inbox))
    relay.route(consumer, headerless_autoreply(consumer, clock.now))
    complaint_id = file_complaint(relay, clock, consumer)

    def ask() -> None:
        with app.sessions.begin() as session:
            ticket = session.scalars(select(Ticket)).one()
            staff.set_fields(
                session,
                app.services,
                ticket,
                actor="agent@example.com",
                now=clock.now(),
                status="waiting",
                reason="请提供购买凭证的照片",
            )

    statuses = run_an_hour(app, relay, clock, consumer, at_round={2: ask})

    assert statuses[:2] == ["received", "received"]
    assert set(statuses[2:]) == {"waiting"}, statuses
    sent = relay.sent_by(SUPPORT)
    assert [d.rcpt for d in sent] == [consumer, consumer]  # the ack and the staff question
    answers = robot_mail(relay, complaint_id)
    assert len(answers) == 2  # the robot answered both, and we answered neither
    with app.sessions() as session:
        inbound = session.scalars(
            select(TimelineEntry).where(
                TimelineEntry.direction == "in", TimelineEntry.message_id != complaint_id
            )
        ).all()
    assert len(inbound) == 2 and all(e.internal for e in inbound)


# -- a real Sieve vacation: Dovecot LDA + Pigeonhole, the support mailbox over IMAP ----------


@pytest.fixture
def vacation_dovecot(relay: Relay) -> Iterator[object]:
    from dovecot import DOVECOT
    from vacation import VacationDovecot, missing

    if not os.path.exists(DOVECOT):
        server_missing(f"Dovecot is not installed ({DOVECOT}; Debian package dovecot-imapd)")
    why = missing()
    if why:
        server_missing(why)
    server = VacationDovecot(submission_port=relay.port)
    try:
        server.start()
    except RuntimeError as exc:
        server.remove()
        pytest.fail(f"Dovecot is installed but would not start: {exc}")
    yield server
    server.remove()


@pytest.mark.parametrize(
    "path",
    [
        pytest.param("as-sent", id="our-headers-arrive"),
        pytest.param("headers-dropped", id="auto-submitted-dropped-on-the-way"),
    ],
)
def test_a_real_sieve_vacation_gets_only_the_ack_in_an_hour_and_changes_no_status(
    make_app: Callable[..., App],
    relay: Relay,
    clock: MovableClock,
    tmp_path: Path,
    vacation_dovecot: object,
    path: str,
) -> None:
    """Pigeonhole honours RFC 3834: our ack carries Auto-Submitted (and X-Auto-Response-Suppress),
    so as sent it is never answered at all. With those headers dropped on the way (a forwarder or
    gateway that rewrites headers), the vacation answers once, and caseloop must not answer back.
    """
    from vacation import CONSUMER, VacationDovecot

    server = vacation_dovecot
    assert isinstance(server, VacationDovecot)
    server.set_vacation(
        CONSUMER, days=1, subject="Out of office", body="I am on holiday until 7 December."
    )
    (tmp_path / "imap-password").write_text(server.users[SUPPORT] + "\n")
    app = make_app(
        '[[mailboxes]]\nname = "imap"\ntype = "imap"\n'
        f'address = "{SUPPORT}"\nhost = "{server.host}"\nport = {server.port}\n'
        'security = "none"\npassword_file = "imap-password"\nidle = false\n' + smtp_config(relay)
    )

    def to_support(relay: Relay, delivery: Delivery) -> None:
        server.deliver(SUPPORT, sender=delivery.mail_from, raw=stamped(delivery))

    def to_consumer(relay: Relay, delivery: Delivery) -> None:
        raw = stamped(delivery)
        if path == "headers-dropped":
            raw = edit_headers(raw, drop=["Auto-Submitted", "X-Auto-Response-Suppress"])
        server.deliver(CONSUMER, sender=delivery.mail_from, raw=raw, recipient=delivery.rcpt)

    relay.route(SUPPORT, to_support)
    relay.route(CONSUMER, to_consumer)
    complaint_id = file_complaint(relay, clock, CONSUMER)

    statuses = run_an_hour(app, relay, clock, CONSUMER)

    log = server.log_text()
    assert len(server.messages(user=CONSUMER)) == 1  # the ack reached the consumer's mailbox
    if path == "as-sent":
        assert "discarding vacation response" in log, log[-2000:]  # Sieve did run
        assert "sent vacation response" not in log, log[-2000:]
        assert_no_loop(app, relay, CONSUMER, complaint_id, statuses, robot_mails=0)
        return
    assert log.count("sent vacation response") == 1, log[-2000:]
    answers = assert_no_loop(app, relay, CONSUMER, complaint_id, statuses, robot_mails=1)
    vacation = answers[0]
    assert vacation.mail_from == "" and (vacation.header("X-Sieve") or "").startswith("Pigeonhole")
    assert vacation.header("In-Reply-To") == relay.sent_by(SUPPORT)[0].header("Message-ID")


# -- the last line: a responder nothing can recognise --------------------------------------


def test_a_responder_nothing_recognises_is_held_to_the_hourly_cap(
    make_app: Callable[..., App], relay: Relay, clock: MovableClock
) -> None:
    """No robot header, no auto-reply subject, no threading: each answer looks like a new
    complaint and gets an ack. The per-address cap ([intake] auto_mail_per_address_per_hour,
    default 5) bounds that exchange to 5 mails in any hour."""
    consumer = "service@shop.example.net"
    app = make_app(smtp_config(relay))
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    relay.route(SUPPORT, maildir_mailbox(inbox))
    relay.route(
        consumer,
        headerless_autoreply(consumer, clock.now, threaded=False, subject="感谢您的来信"),
    )
    start = clock.now()
    file_complaint(relay, clock, consumer)

    run_an_hour(app, relay, clock, consumer)

    with app.sessions() as session:
        times = sorted(
            session.scalars(
                select(OutboxMessage.created_at).where(OutboxMessage.recipient == consumer)
            )
        )
        capped = session.scalars(
            select(TimelineEntry).where(TimelineEntry.kind == "note", TimelineEntry.internal)
        ).all()
    assert len(relay.sent_to(consumer)) == len(times)
    assert len([t for t in times if t < start + timedelta(hours=1)]) == 5
    for t in times:
        assert len([u for u in times if t - timedelta(hours=1) < u <= t]) <= 5
    assert capped and all("limit" in (e.text or "") for e in capped)
