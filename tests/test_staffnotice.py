"""The assignee hears when the consumer writes again on an open case; an hour's burst once."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid

from conftest import QUALITY_DESK
from sqlalchemy import select

from daemon.app import App
from daemon.maildirs import deliver_to_maildir
from daemon.store.models import OutboxMessage, Ticket, TimelineEntry

DESK = """
[intake]
ack_max_age = "3650 days"

[escalation]
supervisors = ["lead@example.com"]
"""

KETTLE = "The kettle I bought leaks from the bottom, it is defective. I want a refund."


def send(app: App, name: str, body: str, sender: str = "li@example.net", **headers: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"] = sender, headers.pop("To", "support@example.com")
    msg["Subject"], msg["Message-ID"] = headers.pop("subject", "Kettle"), make_msgid()
    for key, value in headers.items():
        msg[key.replace("_", "-")] = value
    msg.set_content(body)
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    deliver_to_maildir(inbox, msg.as_bytes(), name=name)
    app.run_once()


def told(app: App) -> list[email.message.EmailMessage]:
    with app.sessions() as session:
        raws = session.scalars(
            select(OutboxMessage.raw)
            .where(OutboxMessage.kind == "consumer_wrote")
            .order_by(OutboxMessage.id)
        ).all()
    return [email.message_from_bytes(r, policy=policy.default) for r in raws]  # type: ignore[misc]


def ack_of(app: App) -> tuple[str, str]:
    with app.sessions() as session:
        row = session.execute(
            select(OutboxMessage.message_id, OutboxMessage.subject).where(
                OutboxMessage.kind == "ack"
            )
        ).one()
    return row[0], row[1]


def test_the_assignee_is_told_once_an_hour_when_the_consumer_writes_again(make_app) -> None:
    app: App = make_app(DESK + QUALITY_DESK)
    send(app, "complaint", KETTLE)
    assert told(app) == []  # a new case is the assignment mail's, not this one's
    ack_id, ack_subject = ack_of(app)
    send(app, "news", "Any news? Photos attached later.", subject=f"Re: {ack_subject}",
         In_Reply_To=ack_id)  # fmt: skip
    (first,) = told(app)
    assert str(first["To"]) == "wang@example.com"
    assert "Any news?" in first.get_body(("plain",)).get_content()
    assert str(first["Reply-To"]).startswith("support+")  # her own proof-carrying address
    assert first["In-Reply-To"]  # threaded with the case's conversation
    send(app, "again", "And again: any news?", subject=f"Re: {ack_subject}", In_Reply_To=ack_id)
    assert len(told(app)) == 1  # a burst within the hour is folded
    app.clock.move(timedelta(minutes=61))  # type: ignore[attr-defined]
    send(app, "later", "Still nothing.", subject=f"Re: {ack_subject}", In_Reply_To=ack_id)
    assert len(told(app)) == 2


def test_without_an_assignee_the_supervisors_hear_and_third_parties_tell_nobody(
    make_app,
) -> None:
    app: App = make_app(DESK)
    send(app, "complaint", KETTLE)
    ack_id, ack_subject = ack_of(app)
    send(app, "stranger", "I am his neighbour.", sender="x@example.org",
         subject=f"Re: {ack_subject}", In_Reply_To=ack_id)  # fmt: skip
    assert told(app) == []
    send(app, "news", "Any news?", subject=f"Re: {ack_subject}", In_Reply_To=ack_id)
    (mail,) = told(app)
    assert str(mail["To"]) == "lead@example.com"


def test_a_supervisor_answering_an_urgent_alert_is_acted_on(make_app) -> None:
    app: App = make_app(DESK + 'urgent_notify = ["compliance@example.com"]\n')
    send(app, "fire", "The kettle caught fire while boiling and burned my hand. I want a refund.")
    with app.sessions() as session:
        alerts = session.execute(
            select(OutboxMessage.recipient, OutboxMessage.raw).where(OutboxMessage.kind == "urgent")
        ).all()
        number = session.scalar(select(Ticket.number))
    assert {r for r, _ in alerts} == {"lead@example.com", "compliance@example.com"}
    for recipient, raw in alerts:
        alert = email.message_from_bytes(raw, policy=policy.default)  # type: ignore[misc]
        reply_to = str(alert["Reply-To"])
        assert reply_to.startswith(f"support+{number}.s")  # their own token, not the consumer's
        command = "#note Called the shop." if recipient == "lead@example.com" else "#priority high"
        send(app, recipient, command, sender=recipient, subject=f"Re: {alert['Subject']}",
             To=reply_to, In_Reply_To=alert["Message-ID"])  # fmt: skip
    with app.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        note = session.scalars(
            select(TimelineEntry).where(TimelineEntry.text == "Called the shop.")
        ).one()
        assert (note.kind, note.actor, note.internal) == ("note", "lead@example.com", True)
        assert ticket.priority == "high"
    # to the plain support address, it proves nothing: the supervisor is told why
    send(app, "plain", "#note again", sender="lead@example.com", subject=f"Re: [{number}]")
    with app.sessions() as session:
        errors = session.scalars(
            select(OutboxMessage.recipient).where(OutboxMessage.kind == "staff_error")
        ).all()
    assert errors == ["lead@example.com"]
