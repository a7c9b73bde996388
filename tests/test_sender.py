"""The sender: outbox rows to a real loopback SMTP server or the Maildir outbox, after commit."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy
from pathlib import Path

from sqlalchemy import select

from daemon.app import App
from daemon.clock import MovableClock
from daemon.maildirs import deliver_to_maildir
from daemon.store.models import OutboxMessage

DATA = Path(__file__).parent / "data"
CORPUS = '[intake]\nack_max_age = "365 days"\n'


def _smtp_config(port: int) -> str:
    return (
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        '[intake]\nack_max_age = "365 days"\n'
    )


def _take_in(app: App, *names: str) -> None:
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    for name in names:
        deliver_to_maildir(inbox, (DATA / name).read_bytes(), name=name)
    app.poll_all()


def test_acks_go_out_over_smtp_with_our_headers(make_app, smtp_sink) -> None:
    sink, port = smtp_sink
    app: App = make_app(_smtp_config(port))
    _take_in(app, "en-plain.eml", "gb18030.eml")
    summary = app.send_outbox()
    assert summary.sent == 2
    assert len(sink.messages) == 2
    for mail_from, rcpts, raw in sink.messages:
        msg = email.message_from_bytes(raw, policy=policy.default)
        assert mail_from == "support@example.com"
        assert rcpts == [msg["To"]]
        assert msg["Auto-Submitted"] == "auto-replied"
        assert msg["Subject"].startswith("[TS-20261124-")
    with app.sessions() as session:
        assert {r.status for r in session.scalars(select(OutboxMessage))} == {"sent"}


def test_4xx_is_retried_later_with_the_same_message_id(
    make_app, smtp_sink, clock: MovableClock
) -> None:
    sink, port = smtp_sink
    app: App = make_app(_smtp_config(port))
    _take_in(app, "en-plain.eml")
    with app.sessions() as session:
        row = session.scalars(select(OutboxMessage)).one()
    sink.refuse[row.recipient] = "450 4.2.0 mailbox busy, try later"
    assert app.send_outbox().sent == 0
    with app.sessions() as session:
        row = session.scalars(select(OutboxMessage)).one()
        assert (row.status, row.attempts) == ("queued", 1)
        assert "450" in (row.last_error or "")
        assert row.next_attempt_at > clock.now()
    del sink.refuse[row.recipient]
    assert app.send_outbox().sent == 0  # not due yet
    clock.move(timedelta(minutes=5))
    assert app.send_outbox().sent == 1
    msg = email.message_from_bytes(sink.messages[0][2], policy=policy.default)
    assert msg["Message-ID"] == row.message_id


def test_5xx_fails_for_good_with_the_servers_reply(make_app, smtp_sink, clock) -> None:
    sink, port = smtp_sink
    app: App = make_app(_smtp_config(port))
    _take_in(app, "en-plain.eml")
    with app.sessions() as session:
        row = session.scalars(select(OutboxMessage)).one()
    sink.refuse[row.recipient] = "550 5.1.1 no such user"
    app.send_outbox()
    clock.move(timedelta(days=3))
    app.send_outbox()
    with app.sessions() as session:
        row = session.scalars(select(OutboxMessage)).one()
    assert row.status == "failed" and row.attempts == 1
    assert "550" in (row.last_error or "")
    assert sink.messages == []


def test_connection_refused_keeps_mail_queued(make_app, clock) -> None:
    app: App = make_app(_smtp_config(1))  # nothing listens on port 1
    _take_in(app, "en-plain.eml")
    assert app.send_outbox().not_sent == 1
    with app.sessions() as session:
        row = session.scalars(select(OutboxMessage)).one()
    assert row.status == "queued" and "cannot reach" in (row.last_error or "")


def test_maildir_outbox_never_writes_one_mail_twice(make_app) -> None:
    app: App = make_app(CORPUS)
    _take_in(app, "en-plain.eml")
    app.send_outbox()
    with app.sessions.begin() as session:  # as if we crashed before recording "sent"
        row = session.scalars(select(OutboxMessage)).one()
        row.status = "queued"
    app.send_outbox()
    files = list((app.config.outbox_dir / "new").iterdir())
    assert len(files) == 1
