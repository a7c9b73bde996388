"""Replies land on their case by Message-ID, subject tag or reply token; strangers change none."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid

from sqlalchemy import func, select

from daemon.app import App
from daemon.maildirs import deliver_to_maildir
from daemon.store.models import OutboxMessage, Ticket, TimelineEntry

CONFIG = '[intake]\nack_max_age = "365 days"\n'


def send_in(app: App, sender: str, subject: str, body: str, **headers: str) -> str:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = headers.pop("to", "support@example.com")
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="example.net")
    msg["Date"] = "Tue, 24 Nov 2026 09:30:00 +0800"
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    deliver_to_maildir(inbox, msg.as_bytes())
    app.run_once()
    return str(msg["Message-ID"])


def first_case(app: App) -> tuple[str, EmailMessage]:
    """Open one case from a consumer and return its number and our acknowledgement."""
    send_in(
        app, "Li Lei <li.lei@example.net>", "电饭煲坏了", "电饭煲用了三天就不加热了，要求退货。"
    )
    with app.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        row = session.scalars(select(OutboxMessage)).one()
    ack = email.message_from_bytes(row.raw, policy=policy.default)
    return ticket.number, ack  # type: ignore[return-value]


def counts(app: App) -> tuple[int, int]:
    with app.sessions() as session:
        return (
            session.scalar(select(func.count()).select_from(Ticket)) or 0,
            session.scalar(select(func.count()).select_from(OutboxMessage)) or 0,
        )


def entries(app: App, number: str) -> list[TimelineEntry]:
    with app.sessions() as session:
        ticket = session.scalars(select(Ticket).where(Ticket.number == number)).one()
        return list(ticket.timeline)


def test_reply_with_in_reply_to_our_ack_threads_without_a_second_ack(make_app) -> None:
    app: App = make_app(CONFIG)
    number, ack = first_case(app)
    send_in(
        app,
        "li.lei@example.net",
        "Re: whatever",
        "订单号 2026112400001",
        In_Reply_To=ack["Message-ID"],
        References=ack["Message-ID"],
    )
    assert counts(app) == (1, 1)
    inbound = [e for e in entries(app, number) if e.direction == "in"]
    assert len(inbound) == 2 and not inbound[1].internal


def test_qq_style_reply_with_only_the_subject_tag_threads(make_app) -> None:
    app: App = make_app(CONFIG)
    number, _ = first_case(app)
    send_in(app, "li.lei@example.net", f"回复：答复: Re:[{number}] 我们已收到您的投诉", "补充照片")
    assert counts(app) == (1, 1)
    assert len([e for e in entries(app, number) if e.direction == "in"]) == 2


def test_reply_token_threads_when_subject_and_headers_are_gone(make_app) -> None:
    app: App = make_app(CONFIG)
    number, ack = first_case(app)
    reply_to = ack["Reply-To"]
    assert reply_to.startswith(f"support+{number}.")
    send_in(app, "li.lei@example.net", "another subject", "还是没人处理", to=reply_to)
    assert counts(app) == (1, 1)


def test_a_guessed_token_does_not_thread(make_app) -> None:
    app: App = make_app(CONFIG)
    number, _ = first_case(app)
    send_in(
        app,
        "li.lei@example.net",
        "new topic",
        "a different complaint",
        to=f"support+{number}.0000000000000000@example.com",
    )
    assert counts(app)[0] == 2


def test_a_tag_naming_no_case_opens_a_new_case(make_app) -> None:
    app: App = make_app(CONFIG)
    first_case(app)
    send_in(app, "han.meimei@example.net", "Re: [TS-20200101-0001] old", "new complaint")
    assert counts(app) == (2, 2)


def test_a_third_party_with_a_tag_is_recorded_for_staff_and_nobody_is_mailed(make_app) -> None:
    app: App = make_app(CONFIG)
    number, _ = first_case(app)
    send_in(app, "stranger@example.org", f"Fwd: [{number}] 电饭煲坏了", "FYI")
    assert counts(app) == (1, 1)
    inbound = [e for e in entries(app, number) if e.direction == "in"]
    assert inbound[-1].actor == "stranger@example.org" and inbound[-1].internal
    with app.sessions() as session:
        assert session.scalars(select(Ticket)).one().status == "received"


def test_an_auto_reply_to_our_ack_threads_for_staff_and_is_never_answered(make_app) -> None:
    app: App = make_app(CONFIG)
    number, ack = first_case(app)
    send_in(
        app,
        "li.lei@example.net",
        "自动回复: 我们已收到您的投诉",
        "我正在休假",
        In_Reply_To=ack["Message-ID"],
        Auto_Submitted="auto-replied",
    )
    assert counts(app) == (1, 1)
    inbound = [e for e in entries(app, number) if e.direction == "in"]
    assert inbound[-1].internal


def test_a_case_waiting_on_the_consumer_resumes_when_they_reply(make_app) -> None:
    from handlers import staff

    app: App = make_app(CONFIG)
    number, ack = first_case(app)
    with app.sessions.begin() as session:
        ticket = session.scalars(select(Ticket).where(Ticket.number == number)).one()
        staff.set_fields(
            session,
            app.services,
            ticket,
            actor="agent@example.com",
            now=app.clock.now(),
            status="waiting",
            reason="need the order number",
        )
    send_in(app, "li.lei@example.net", f"Re: [{number}]", "订单号 2026112400001")
    with app.sessions() as session:
        ticket = session.scalars(select(Ticket).where(Ticket.number == number)).one()
        assert ticket.status == "received"
        moves = [(e.data["from"], e.data["to"]) for e in ticket.timeline if e.kind == "status"]
    assert moves == [("received", "waiting"), ("waiting", "received")]


def test_a_bounce_marks_our_mail_and_lands_on_the_case_without_an_answer(make_app) -> None:
    app: App = make_app(CONFIG)
    number, ack = first_case(app)
    dsn = (
        "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
        "To: support@example.com\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce-1@mx.example.net>\r\n"
        "Date: Tue, 24 Nov 2026 10:05:00 +0800\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        "Final-Recipient: rfc822; li.lei@example.net\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 mailbox unknown\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {ack['Message-ID']}\r\nTo: li.lei@example.net\r\n"
        f"Subject: {ack['Subject']}\r\n\r\n--B--\r\n"
    ).encode()
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    deliver_to_maildir(inbox, dsn, name="dsn")
    app.run_once()
    assert counts(app) == (1, 1)  # no new case, no mail to a robot
    with app.sessions() as session:
        row = session.scalars(select(OutboxMessage)).one()
        assert row.status == "bounced" and "5.1.1" in (row.last_error or "")
    bounce = [e for e in entries(app, number) if e.direction == "in"][-1]
    assert bounce.internal and bounce.actor.startswith("mailer-daemon")


def test_the_timeline_shows_what_the_consumer_wrote_not_the_quoted_history(make_app) -> None:
    app: App = make_app(CONFIG)
    number, _ = first_case(app)
    body = (
        "好的，订单号是 2026112400001。\n\n"
        "------------------ 原始邮件 ------------------\n"
        '发件人: "客户服务中心"<support@example.com>;\n'
        "发送时间: 2026年11月24日(星期二) 上午10:00\n"
        f"主题: [{number}] 我们已收到您的投诉\n\n感谢您的反馈。您的投诉已登记。\n"
    )
    send_in(app, "li.lei@example.net", f"回复：[{number}] 我们已收到您的投诉", body)
    reply = [e for e in entries(app, number) if e.direction == "in"][-1]
    assert reply.text == "好的，订单号是 2026112400001。"
    with app.sessions() as session:  # the full original is kept
        from daemon.store.models import SourceItem

        raws = [
            r for r in session.scalars(select(SourceItem.raw)) if r and "原始邮件".encode() in r
        ]
    assert len(raws) == 1
