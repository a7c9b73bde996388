"""The survey over real servers: complaint, resolution, survey, appeal, a second survey, "5".

caseloop runs in-process on a MovableClock, reading a real Dovecot mailbox over IMAP and sending
through a real aiosmtpd server. The consumer's mail is APPENDed to the support INBOX the way
their mail server would deliver it; what caseloop sends is read back from the SMTP sink.
"""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from conftest import SmtpSink
from dovecot import Dovecot
from sqlalchemy import select

from daemon.app import App
from daemon.store.models import Ticket
from handlers.workflow import apply_transition

CONSUMER = "li.na@example.cn"
SUPERVISORS = ("lead@example.com", "boss@example.com")


def sent(sink: SmtpSink, kind_word: str | None = None) -> list[email.message.EmailMessage]:
    mails = [
        email.message_from_bytes(content, policy=policy.default) for _, _, content in sink.messages
    ]
    return [m for m in mails if kind_word is None or kind_word in str(m["Subject"])]


def text_of(mail: email.message.EmailMessage) -> str:
    return str(mail.get_body(("plain",)).get_content())  # type: ignore[union-attr]


def deliver(
    box: Dovecot, app: App, body: str, *, to: str, subject: str, parent: str | None = None
) -> None:
    msg = EmailMessage()
    msg["From"] = CONSUMER
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(app.clock.now())
    msg["Message-ID"] = make_msgid(domain="example.cn")
    if parent:
        msg["In-Reply-To"] = parent
        msg["References"] = parent
    msg.set_content(body)
    box.append(msg.as_bytes())
    app.run_once()


def resolve(app: App, *statuses: str) -> Ticket:
    with app.sessions.begin() as session:
        ticket = session.scalars(select(Ticket)).one()
        for status in statuses:
            apply_transition(
                session,
                app.services,
                ticket,
                status,
                actor="agent@example.com",
                now=app.clock.now(),
                reason="已为您更换新品" if status == "resolved" else None,
            )
        session.expunge(ticket)
        return ticket


def current(app: App) -> Ticket:
    with app.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        session.expunge(ticket)
        return ticket


def test_appeal_then_satisfied_over_imap_and_smtp(
    make_app, imap_box: Dovecot, smtp_sink: tuple[SmtpSink, int], tmp_path: Path
) -> None:
    sink, port = smtp_sink
    (tmp_path / "imap-password").write_text(imap_box.password + "\n")
    app: App = make_app(
        "[[mailboxes]]\n"
        f'name = "imap"\ntype = "imap"\naddress = "{imap_box.user}"\n'
        f'host = "{imap_box.host}"\nport = {imap_box.port}\nsecurity = "none"\n'
        'password_file = "imap-password"\nidle = false\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        f"[escalation]\nsupervisors = {list(SUPERVISORS)!r}\n".replace("'", '"')
    )
    deliver(
        imap_box,
        app,
        "上周买的电热水壶底部漏水，订单号 2026111800042，要求换新。",
        to=imap_box.user,
        subject="电热水壶漏水",
    )
    assert [m["To"] for m in sent(sink)].count(CONSUMER) == 1  # the acknowledgement
    number = resolve(app, "accepted", "in_progress", "resolved").number

    app.clock.move(timedelta(hours=23))
    app.run_once()
    assert sent(sink, "回访") == []
    app.clock.move(timedelta(hours=1))
    app.run_once()
    app.run_once()
    [survey] = sent(sink, "回访")
    assert survey["To"] == CONSUMER and number in str(survey["Subject"])
    assert "已为您更换新品" in text_of(survey)

    # "不满意, 还是漏水", replied in the thread with the survey quoted below
    quoted = "\n".join("> " + line for line in text_of(survey).splitlines())
    deliver(
        imap_box,
        app,
        f"不满意, 还是漏水\n\n在 2026年11月27日 10:00，客户服务中心 写道：\n{quoted}\n",
        to=str(survey["Reply-To"]),
        subject=f"回复：{survey['Subject']}",
        parent=str(survey["Message-ID"]),
    )
    ticket = current(app)
    assert (ticket.status, ticket.reopened_count) == ("in_progress", 1)
    appeals = sent(sink, "申诉")
    assert sorted(str(m["To"]) for m in appeals) == sorted(SUPERVISORS)
    assert all("还是漏水" in text_of(m) for m in appeals)
    assert any("重新" in text_of(m) for m in sent(sink) if m["To"] == CONSUMER)

    # resolved again: a second survey, with a new token; one click on "满意" closes the case
    resolve(app, "resolved")
    app.clock.move(timedelta(hours=72))
    app.run_once()
    app.run_once()
    surveys = sent(sink, "回访")
    assert len(surveys) == 2
    link = next(
        word
        for word in text_of(surveys[1]).split()
        if word.startswith("mailto:") and word.endswith("body=" + quote("满意"))
    )
    parts = urlsplit(link)
    query = dict(p.split("=", 1) for p in parts.query.split("&"))
    deliver(imap_box, app, unquote(query["body"]), to=parts.path, subject=unquote(query["subject"]))
    ticket = current(app)
    assert (ticket.status, ticket.satisfaction_score, ticket.satisfaction_outcome) == (
        "closed",
        5,
        "satisfied",
    )
    [thanks] = sent(sink, "感谢您的评价")
    assert thanks["To"] == CONSUMER
    # a week later nothing more goes out
    before = [m["To"] for m in sent(sink)].count(CONSUMER)
    app.clock.move(timedelta(days=8))
    app.run_once()
    assert [m["To"] for m in sent(sink)].count(CONSUMER) == before
