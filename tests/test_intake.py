"""Maildir intake end to end through the pipeline, on SQLite and on PostgreSQL."""

from __future__ import annotations

import email
import json
from email import policy
from pathlib import Path

import pytest
from sqlalchemy import func, select

from daemon.app import App
from daemon.maildirs import deliver_to_maildir
from daemon.store.models import OutboxMessage, SourceItem, Ticket, TimelineEntry
from daemon.views import ticket_json

DATA = Path(__file__).parent / "data"
# The corpus is dated early November; these tests are about intake, not about ack_max_age.
CORPUS = '[intake]\nack_max_age = "365 days"\n'

VALID = [
    "gb2312-declared-gbk-bytes.eml",
    "gb18030.eml",
    "big5.eml",
    "undeclared-gbk.eml",
    "wrong-charset-utf8-declared-latin1.eml",
    "rfc2047-subject-zh.eml",
    "rfc2231-attachment-zh.eml",
    "html-only-zh.eml",
    "en-plain.eml",
    "attachment-path-traversal.eml",
]


def drop(app: App, *names: str) -> None:
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    for name in names:
        deliver_to_maildir(inbox, (DATA / name).read_bytes(), name=name)


def outbox_mails(app: App) -> list[email.message.EmailMessage]:
    folder = app.config.outbox_dir / "new"
    return [
        email.message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
        for p in sorted(folder.iterdir())
    ]


def test_mixed_real_world_mail_gives_one_ticket_and_one_ack_each(make_app) -> None:
    app: App = make_app(CORPUS)
    drop(
        app,
        *VALID,
        "no-from.eml",
        "auto-reply-zh.eml",
        "bounce-null-sender.eml",
        "not-an-email.eml",
    )
    summary = app.run_once()

    assert len(summary.opened) == len(VALID)
    with app.sessions() as session:
        tickets = session.scalars(select(Ticket)).all()
        assert len(tickets) == len(VALID)
        assert len({t.number for t in tickets}) == len(VALID)
        outcomes = dict(session.execute(select(SourceItem.key, SourceItem.outcome)).all())
    assert outcomes["no-from.eml"] == "quarantined"
    assert outcomes["not-an-email.eml"] == "quarantined"
    assert outcomes["auto-reply-zh.eml"] == "ignored"
    assert outcomes["bounce-null-sender.eml"] == "ignored"
    reasons = {item: why for _, item, _, why in summary.set_aside}
    assert "sender" in reasons["no-from.eml"].lower() or "from" in reasons["no-from.eml"].lower()

    # the bad and the robotic mail is kept for a human, in the quarantine Maildir
    quarantine = app.config.mailboxes[0].quarantine_path
    assert quarantine is not None
    kept = {p.name for p in (quarantine / "new").iterdir()}
    assert {"no-from.eml", "not-an-email.eml", "auto-reply-zh.eml"} <= kept

    acks = outbox_mails(app)
    assert len(acks) == len(VALID)
    by_ticket = {m["X-Caseloop-Ticket"]: m for m in acks}
    with app.sessions() as session:
        for ticket in session.scalars(select(Ticket)):
            ack = by_ticket[ticket.number]
            assert f"[{ticket.number}]" in ack["Subject"]
            assert ack["Auto-Submitted"] == "auto-replied"
            assert ack["Message-ID"].endswith("@example.com>")
            incoming = session.scalars(
                select(TimelineEntry).where(
                    TimelineEntry.ticket_id == ticket.id, TimelineEntry.direction == "in"
                )
            ).one()
            assert ack["In-Reply-To"] == incoming.message_id
            assert incoming.message_id in ack["References"]
            assert ack["To"] == ticket.complainant_email
            assert ticket.acknowledged_at is not None


def test_second_run_changes_nothing(make_app) -> None:
    app: App = make_app(CORPUS)
    drop(app, "en-plain.eml", "gb18030.eml", "no-from.eml")
    app.run_once()
    with app.sessions() as session:
        before = (
            session.scalar(select(func.count()).select_from(Ticket)),
            session.scalar(select(func.count()).select_from(OutboxMessage)),
        )
    again = app.run_once()
    assert again.opened == [] and again.sent == 0
    with app.sessions() as session:
        after = (
            session.scalar(select(func.count()).select_from(Ticket)),
            session.scalar(select(func.count()).select_from(OutboxMessage)),
        )
    assert before == after == (2, 2)
    assert len(outbox_mails(app)) == 2


def test_redelivered_file_after_a_crash_before_settle_is_not_taken_twice(make_app) -> None:
    """Commit happened, the move to cur/ did not: the next poll only settles the file."""
    app: App = make_app(CORPUS)
    drop(app, "en-plain.eml")
    source = app.sources[0]
    settle = source.settle
    source.settle = lambda item, outcome: None  # type: ignore[method-assign]
    app.poll(source)
    source.settle = settle  # type: ignore[method-assign]
    app.run_once()
    with app.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 1
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    assert list((inbox / "new").iterdir()) == []


def test_same_message_id_via_two_files_is_one_entry(make_app) -> None:
    app: App = make_app(CORPUS)
    raw = (DATA / "en-plain.eml").read_bytes()
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    deliver_to_maildir(inbox, raw, name="copy-1")
    deliver_to_maildir(inbox, raw, name="copy-2")
    app.run_once()
    with app.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
        assert (
            session.scalar(
                select(func.count())
                .select_from(TimelineEntry)
                .where(TimelineEntry.direction == "in")
            )
            == 1
        )
        outcomes = sorted(session.scalars(select(SourceItem.outcome)).all())
    assert outcomes == ["duplicate", "ticket"]


def test_subjects_and_bodies_decode_into_the_case_json(make_app) -> None:
    app: App = make_app(CORPUS)
    drop(
        app,
        "rfc2047-subject-zh.eml",
        "gb2312-declared-gbk-bytes.eml",
        "big5.eml",
        "html-only-zh.eml",
        "rfc2231-attachment-zh.eml",
    )
    app.run_once()
    with app.sessions() as session:
        cases = [
            ticket_json(t, app.config.timezone, timeline=True)
            for t in session.scalars(select(Ticket).order_by(Ticket.id))
        ]
    text = json.dumps(cases, ensure_ascii=False)
    assert "=?" not in text  # no undecoded RFC 2047 words anywhere
    assert "\ufffd" not in json.dumps([c["subject"] for c in cases], ensure_ascii=False)
    for case in cases:
        assert case["language"] == "zh-CN"
        assert case["due"]["first_response"] and case["due"]["acceptance"]
        assert case["created_at"].endswith("+08:00")
        assert case["timeline"][0]["kind"] == "message_in"
        assert "<script" not in (case["timeline"][0]["text"] or "")
    attachments = [a for c in cases for e in c["timeline"] for a in e["attachments"]]
    assert any(a["filename"].endswith(".pdf") and "发票" in a["filename"] for a in attachments)


def test_attachments_are_content_addressed_never_named_by_the_sender(make_app) -> None:
    app: App = make_app(CORPUS)
    drop(app, "attachment-path-traversal.eml")
    app.run_once()
    with app.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        atts = [a for e in ticket.timeline for a in e.attachments]
    assert atts
    for att in atts:
        assert "/" not in att.filename and "\\" not in att.filename
        assert not att.filename.startswith(".")
        stored = app.blobs.path(att.sha256)
        assert stored.is_file() and stored.stat().st_size == att.size
        assert stored.is_relative_to(app.config.blobs_dir)


def test_an_internal_error_quarantines_one_message_and_the_queue_goes_on(
    make_app, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: App = make_app(CORPUS)
    drop(app, "en-plain.eml", "gb18030.eml", "big5.eml")
    from handlers import classify

    real = classify.decide

    def explode_on_big5(text: str, rules, **kwargs):  # type: ignore[no-untyped-def]
        if "臺" in text or "台" in text or "貨" in text:
            raise RuntimeError("boom")
        return real(text, rules, **kwargs)

    monkeypatch.setattr(classify, "decide", explode_on_big5)
    summary = app.run_once()
    assert len(summary.opened) == 2
    assert [how for _, _, how, _ in summary.set_aside] == ["quarantined"]
    assert "internal error" in summary.set_aside[0][3]
    with app.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 2
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 2


def test_old_mail_is_registered_without_an_ack(make_app) -> None:
    app: App = make_app()
    raw = (DATA / "en-plain.eml").read_bytes()
    old = raw.replace(b"Message-ID: <", b"Message-ID: <old-", 1)
    old = email.message_from_bytes(old)
    del old["Date"]
    old["Date"] = "Mon, 02 Nov 2026 09:00:00 +0800"
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    deliver_to_maildir(inbox, old.as_bytes(), name="old")
    summary = app.run_once()
    assert len(summary.opened) == 1 and summary.sent == 0
    assert any("ack_max_age" in n for n in summary.notes)


def test_language_follows_the_consumers_own_text(make_app) -> None:
    app: App = make_app(CORPUS)
    drop(app, "en-plain.eml", "gb18030.eml")
    app.run_once()
    with app.sessions() as session:
        langs = sorted(session.scalars(select(Ticket.language)).all())
    assert langs == ["en", "zh-CN"]


def test_a_failure_while_deciding_sets_aside_one_message_and_keeps_its_neighbours(
    make_app, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: App = make_app(CORPUS)
    drop(app, "en-plain.eml", "gb18030.eml", "big5.eml")
    from handlers import acknowledge

    real = acknowledge.queue_mail

    def fail_for_one(*args, **kwargs):  # type: ignore[no-untyped-def]
        if kwargs["ticket"].complainant_email.startswith("chan"):
            raise RuntimeError("template exploded")
        return real(*args, **kwargs)

    monkeypatch.setattr(acknowledge, "queue_mail", fail_for_one)
    summary = app.run_once()
    assert len(summary.opened) == 2
    assert [how for _, _, how, _ in summary.set_aside] == ["quarantined"]
    assert "template exploded" in summary.set_aside[0][3]
    with app.sessions() as session:
        # the failed message left nothing behind: no half case, no orphan timeline entry
        assert session.scalar(select(func.count()).select_from(Ticket)) == 2
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 2
        assert session.scalar(select(func.count()).select_from(TimelineEntry)) == 4
        assert session.scalar(select(func.count()).select_from(SourceItem)) == 3


def test_oversized_mail_is_quarantined_with_its_size(make_app) -> None:
    app: App = make_app(CORPUS + 'max_message_size = "1KB"\n')
    drop(app, "rfc2231-attachment-zh.eml")
    summary = app.run_once()
    assert summary.opened == []
    assert "over max_message_size 1000" in summary.set_aside[0][3]


def test_consumer_text_cannot_inject_headers_into_our_mail(make_app) -> None:
    app: App = make_app(CORPUS)
    raw = (DATA / "en-plain.eml").read_bytes()
    evil = email.message_from_bytes(raw)
    del evil["Subject"]
    evil["Subject"] = "=?utf-8?q?Hello=0D=0ABcc=3A_victim=40example=2Eorg?="
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    deliver_to_maildir(inbox, evil.as_bytes(), name="evil")
    app.run_once()
    (ack,) = outbox_mails(app)
    assert ack["Bcc"] is None
    assert "victim@example.org" not in ack.get_all("To", [])[0]
    assert "\n" not in str(ack["Subject"])


def test_a_batch_is_bounded_in_bytes_as_well_as_in_messages(make_app, monkeypatch) -> None:
    from daemon.sources import maildir

    monkeypatch.setattr(maildir, "BATCH_BYTES", 1)  # every mail is "huge"
    app: App = make_app(CORPUS)
    drop(app, "en-plain.eml", "gb18030.eml", "big5.eml")
    assert len(app.sources[0].fetch(200)) == 1
    assert len(app.run_once().opened) == 3  # and the rest follow, batch by batch


WILD_SENDERS = {  # what Zammad opens a case for, and we used to quarantine
    "reply-to-only": b"Reply-To: wang@example.cn",
    "two-froms": b"From: broken\nFrom: li@example.cn",
    "quoted-local": b'From: "zhang san"@example.cn',
    "junk-first": b"---- Original email message ----\nFrom: zhao@example.cn",
    "sender-only": b"Sender: qian@example.cn",
}


def test_mail_from_the_wild_with_odd_senders_opens_cases_answered_where_they_say(make_app) -> None:
    app: App = make_app(CORPUS)
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    for name, top in WILD_SENDERS.items():
        raw = (
            top
            + (
                f"\nTo: support@example.com\nSubject: {name}\nMessage-ID: <{name}@example.cn>\n"
                "Content-Type: text/plain; charset=utf-8\n\n我买的电水壶漏水，要求退货。\n"
            ).encode()
        )
        deliver_to_maildir(inbox, raw, name=name)
    app.run_once()
    with app.sessions() as session:
        outcomes = dict(session.execute(select(SourceItem.key, SourceItem.outcome)).all())
        cases = dict(session.execute(select(Ticket.subject, Ticket.complainant_email)).all())
    assert sorted(outcomes.values()) == ["ticket"] * len(WILD_SENDERS)
    assert cases == {
        "reply-to-only": "wang@example.cn",
        "two-froms": "li@example.cn",
        "quoted-local": '"zhang san"@example.cn',
        "junk-first": "zhao@example.cn",
        "sender-only": "qian@example.cn",
    }
    acks = sorted(str(m["To"]) for m in outbox_mails(app))
    assert acks == sorted(cases.values())  # each acknowledged at the address it gave
