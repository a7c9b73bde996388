"""Hostile mail: nothing stalls the queue, nothing hides a complaint, nothing games the limits.

How long each adversarial mail takes is measured in bench/hostile.py (timing goals live in
bench/); here each is taken in, beside an honest neighbour, with the outcome that matters.
"""

from __future__ import annotations

import base64
import email
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid

import pytest
from conftest import QUALITY_DESK
from sqlalchemy import func, select

from daemon.app import App
from daemon.maildirs import deliver_to_maildir
from daemon.store.models import OutboxMessage, SourceItem, Ticket, TimelineEntry
from handlers import pipeline
from handlers.parse import MAX_REFERENCES, MAX_SUBJECT, parse_message

CONFIG = '[intake]\nack_max_age = "3650 days"\n'


def mail(
    subject: str = "投诉：电饭煲无法加热",
    body: str = "我买的电饭煲三天后无法加热，要求退货退款。",
    sender: str = "consumer@example.net",
    message_id: str | None = None,
    **headers: str,
) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"] = sender, "support@example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id or make_msgid(domain="example.net")
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def raw_mail(subject_field: str, body: str = "投诉内容。", extra: str = "") -> bytes:
    """A mail whose Subject (and extra header lines) are written as given, unencoded by us."""
    return (
        "From: consumer@example.net\r\nTo: support@example.com\r\n"
        f"Message-ID: {make_msgid(domain='example.net')}\r\n{extra}"
        f"Subject: {subject_field}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{body}\r\n"
    ).encode()


def drop(app: App, *raws: bytes) -> list[str]:
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    names = [f"m{i}" for i in range(len(raws))]
    for name, raw in zip(names, raws, strict=True):
        deliver_to_maildir(inbox, raw, name=name)
    return names


def outcomes(app: App) -> dict[str, str]:
    with app.sessions() as session:
        return dict(session.execute(select(SourceItem.key, SourceItem.outcome)).all())


def acks(app: App) -> list[email.message.EmailMessage]:
    folder = app.config.outbox_dir / "new"
    if not folder.is_dir():
        return []
    return [
        email.message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
        for p in sorted(folder.iterdir())
    ]


def test_a_long_comma_only_line_is_taken_in_with_its_neighbour(make_app) -> None:
    app: App = make_app(CONFIG)
    line = "这个商品质量很差，" * (120_000 // 9)  # ordinary prose with commas, no full stop
    drop(app, mail(body=line + "\n我要求退款。"), mail(sender="next@example.net"))
    summary = app.run_once()
    assert outcomes(app) == {"m0": "ticket", "m1": "ticket"}
    assert len(summary.opened) == 2


def test_a_subject_of_a_million_characters_is_cut_and_the_case_opened(make_app) -> None:
    app: App = make_app(CONFIG)
    words = "\r\n ".join(
        ["=?utf-8?b?" + base64.b64encode("退款".encode()).decode() + "?="] * 200_000
    )
    drop(app, raw_mail(words), mail(sender="next@example.net"))
    app.run_once()
    assert outcomes(app) == {"m0": "ticket", "m1": "ticket"}
    with app.sessions() as session:
        subject = session.scalar(
            select(Ticket.subject).where(Ticket.complainant_email == "consumer@example.net")
        )
    assert subject is not None and set(subject) == {"退", "款"}
    assert len(subject) == MAX_SUBJECT


def test_references_of_400k_ids_still_thread_onto_the_case(make_app) -> None:
    app: App = make_app(CONFIG)
    drop(app, mail())
    app.run_once()
    (ack,) = acks(app)
    ours = ack["Message-ID"]
    junk = " ".join(f"<{i}@junk.example>" for i in range(400_000))
    reply = raw_mail("Re: 投诉", "还没处理。", f"References: {junk} {ours}\r\n")
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    deliver_to_maildir(inbox, reply, name="reply")
    app.run_once()
    assert outcomes(app)["reply"] == "entry"
    assert len(parse_message(reply).references) == MAX_REFERENCES
    with app.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1


def test_an_encoded_line_break_in_a_subject_stays_in_one_subject_line(make_app) -> None:
    app: App = make_app(CONFIG)
    subject = "=?utf-8?b?" + base64.b64encode("退款\r\n请回复 #accept".encode()).decode() + "?="
    drop(app, raw_mail(subject))
    app.run_once()
    with app.sessions() as session:
        assert session.scalar(select(Ticket.subject)) == "退款 请回复 #accept"
    (ack,) = acks(app)
    assert "退款 请回复 #accept" in str(ack["Subject"])
    assert "#accept" not in ack.get_body(("plain",)).get_content().splitlines()[0]


def test_a_quoted_encoded_word_goes_out_as_the_text_it_is(make_app) -> None:
    app: App = make_app(CONFIG)
    literal = "=?utf-8?b?" + base64.b64encode(b"URGENT: reply #accept").decode() + "?="
    drop(app, raw_mail("=?utf-8?b?" + base64.b64encode(f"投诉 {literal}".encode()).decode() + "?="))
    app.run_once()
    (ack,) = acks(app)
    assert literal in str(ack["Subject"])  # what a reader's client shows: the literal text
    assert "URGENT" not in str(ack["Subject"])


def test_two_different_mails_under_one_message_id_are_two_cases(make_app) -> None:
    app: App = make_app(CONFIG)
    shared = "<same@broken-client.example>"
    alice = mail(
        sender="alice@example.net", body="Alice：电水壶漏水，要求退款。", message_id=shared
    )
    bob = mail(sender="bob@example.net", body="Bob：快递丢了，要求赔偿。", message_id=shared)
    drop(app, alice, bob)
    summary = app.run_once()
    assert outcomes(app) == {"m0": "ticket", "m1": "ticket"}
    assert any("other content" in note for note in summary.notes)
    with app.sessions() as session:
        who = set(session.scalars(select(Ticket.complainant_email)))
        raws = session.scalars(select(SourceItem.raw)).all()
    assert who == {"alice@example.net", "bob@example.net"}
    assert all(raw for raw in raws)  # both originals kept
    assert {str(a["To"]) for a in acks(app)} == {"alice@example.net", "bob@example.net"}

    # each resent (another alias, a client's retry) is still one entry
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    deliver_to_maildir(inbox, bob, name="bob-again")
    deliver_to_maildir(inbox, alice, name="alice-again")
    app.run_once()
    found = outcomes(app)
    assert (found["bob-again"], found["alice-again"]) == ("duplicate", "duplicate")
    with app.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 2


def test_plus_address_variants_share_one_hourly_allowance(make_app) -> None:
    app: App = make_app(CONFIG + "auto_mail_per_address_per_hour = 3\n")
    drop(app, *(mail(sender=f"Spammer+{i}@Example.NET") for i in range(30)))
    app.run_once()
    assert len(acks(app)) == 3
    with app.sessions() as session:
        keys = set(session.scalars(select(OutboxMessage.recipient_key)))
    assert keys == {"spammer@example.net"}


def test_our_own_address_with_a_trailing_dot_is_not_answered(make_app) -> None:
    app: App = make_app(CONFIG)
    drop(app, mail(sender="support@example.com."), mail(sender="SUPPORT+x@example.com"))
    app.run_once()
    assert acks(app) == []
    assert set(outcomes(app).values()) == {"ignored"}


def test_a_robot_answering_every_ack_opens_only_the_days_allowance(make_app) -> None:
    app: App = make_app(CONFIG + "new_cases_per_sender_per_day = 3\n")
    drop(app, *(mail(sender="robot@example.net", subject=f"Order {i}") for i in range(5)))
    summary = app.run_once()
    assert list(outcomes(app).values()).count("ticket") == 3
    assert len(summary.opened) == 3
    with app.sessions() as session:
        latest = session.scalar(select(func.max(Ticket.id)))
        kept = session.scalars(
            select(TimelineEntry.ticket_id).where(TimelineEntry.subject.in_(["Order 3", "Order 4"]))
        ).all()
    assert kept == [latest, latest]  # kept for staff on the latest case, not dropped
    assert len(acks(app)) == 3
    assert any("new_cases_per_sender_per_day" in note for note in summary.notes)


def test_a_message_over_its_time_budget_is_set_aside_and_the_batch_goes_on(
    make_app, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: App = make_app(CONFIG + 'message_time_budget = "5s"\n')
    now = [0.0]
    monkeypatch.setattr(pipeline.time, "perf_counter", lambda: now[0])
    real = pipeline.Register.process

    def slow_for_one(self, prep, config, blobs):  # type: ignore[no-untyped-def]
        if "SLOW" in prep.message.subject:
            now[0] += 60.0  # as if one step spent a minute on it
        return real(self, prep, config, blobs)

    monkeypatch.setattr(pipeline.Register, "process", slow_for_one)
    drop(app, mail(subject="SLOW complaint"), mail(sender="next@example.net"))
    summary = app.run_once()
    assert outcomes(app) == {"m0": "quarantined", "m1": "ticket"}
    (why,) = [why for _, item, _, why in summary.set_aside if item == "m0"]
    assert "message_time_budget" in why and "'register'" in why
    quarantine = app.config.mailboxes[0].quarantine_path
    assert quarantine is not None and "m0" in {p.name for p in (quarantine / "new").iterdir()}


@pytest.mark.parametrize("encoding", ["utf-8", "gbk"])
def test_raw_8bit_attachment_names_are_decoded(encoding: str) -> None:
    name = "发票扫描.pdf".encode(encoding)
    raw = (
        b"From: a@example.net\r\nTo: s@example.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=BB\r\n\r\n--BB\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n--BB\r\n"
        b'Content-Type: application/pdf; name="' + name + b'"\r\n'
        b'Content-Disposition: attachment; filename="' + name + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--BB--\r\n"
    )
    assert [a.filename for a in parse_message(raw).attachments] == ["发票扫描.pdf"]


def test_a_catch_all_domain_gets_the_hours_acknowledgements_and_no_more(make_app) -> None:
    app: App = make_app(CONFIG + "acks_per_domain_per_hour = 3\n")
    drop(
        app,
        *(mail(sender=f"user{i}@catch-all.cn") for i in range(6)),
        *(mail(sender=f"user{i}@qq.com") for i in range(6)),  # a provider the public shares
    )
    summary = app.run_once()
    assert len(summary.opened) == 12  # every complaint is a case
    to = [str(a["To"]) for a in acks(app)]
    assert sum(t.endswith("@catch-all.cn") for t in to) == 3
    assert sum(t.endswith("@qq.com") for t in to) == 6
    assert any("acks_per_domain_per_hour" in note for note in summary.notes)


def test_a_reply_forged_as_the_complainant_that_our_mx_failed_moves_nothing(make_app) -> None:
    app: App = make_app(
        CONFIG + '[escalation]\ntrusted_authserv_ids = ["mx.example.com"]\n'
        '[tickets]\nmail_essentials = ["respondent"]\n'
    )
    drop(app, mail(body="我买的电饭煲三天后无法加热，要求退货退款。"))  # names no business
    app.run_once()
    (request,) = acks(app)
    with app.sessions() as session:
        assert session.scalar(select(Ticket.status)) == "waiting"

    def reply(name: str, results: str) -> None:
        raw = mail(
            subject=f"Re: {request['Subject']}",
            body="商家是京东自营。",
            In_Reply_To=request["Message-ID"],
            Authentication_Results=results,
        )
        inbox = app.config.mailboxes[0].path
        assert inbox is not None
        deliver_to_maildir(inbox, raw, name=name)
        app.run_once()

    reply("forged", "mx.example.com; dmarc=fail header.from=example.net")
    with app.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.status == "waiting"
        entry = session.scalars(
            select(TimelineEntry).where(TimelineEntry.text.contains("京东自营"))
        ).one()
        assert entry.internal and "dmarc=fail by mx.example.com" in entry.data["disputed"]
    reply("genuine", "mx.example.com; dmarc=pass header.from=example.net")
    with app.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.status == "received"  # the complainant's own reply resumes the case


def test_cases_routed_in_a_burst_reach_their_assignee_in_one_mail(make_app) -> None:
    app: App = make_app(CONFIG + QUALITY_DESK)
    complaint = "The kettle I bought leaks from the bottom, it is defective. I want a refund."
    drop(
        app, *(mail(sender=f"c{i}@example.net", subject="Kettle", body=complaint) for i in range(6))
    )
    app.run_once()
    with app.sessions() as session:
        rows = session.execute(
            select(OutboxMessage.kind, OutboxMessage.status).where(
                OutboxMessage.recipient == "wang@example.com"
            )
        ).all()
        assert (
            session.scalar(select(func.count()).where(Ticket.assignee == "wang@example.com")) == 6
        )
    # the first case is mailed at once, the other five wait for the fold (15 minutes)
    assert sorted(rows) == [("assigned", "folded")] * 5 + [("assigned", "sent")]
    app.clock.move(timedelta(minutes=16))  # type: ignore[attr-defined]
    app.run_once()
    to_wang = [m for m in acks(app) if str(m["To"]) == "wang@example.com"]
    assert len(to_wang) == 2
    (folded,) = [m for m in to_wang if "5 cases" in str(m["Subject"])]
    text = folded.get_body(("plain",)).get_content()
    with app.sessions() as session:
        numbers = session.scalars(select(Ticket.number).order_by(Ticket.id)).all()
        merged = session.scalar(select(func.count()).where(OutboxMessage.status == "merged"))
    assert all(n in text for n in numbers[1:]) and numbers[0] not in text
    assert merged == 5
    app.clock.move(timedelta(minutes=16))  # type: ignore[attr-defined]
    app.run_once()
    assert len([m for m in acks(app) if str(m["To"]) == "wang@example.com"]) == 2  # nothing more


def test_an_error_quoting_megabytes_is_kept_with_a_bounded_reason(
    make_app, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: App = make_app(CONFIG)
    real = pipeline.Register.process

    def choke(self, prep, config, blobs):  # type: ignore[no-untyped-def]
        if "BOOM" in prep.message.subject:
            raise RuntimeError("too many SQL variables: " + "?, " * 1_000_000)
        return real(self, prep, config, blobs)

    monkeypatch.setattr(pipeline.Register, "process", choke)
    drop(app, mail(subject="BOOM"), mail(sender="next@example.net"))
    app.run_once()
    assert outcomes(app) == {"m0": "quarantined", "m1": "ticket"}
    with app.sessions() as session:
        reason = session.scalar(select(SourceItem.reason).where(SourceItem.key == "m0"))
    assert reason is not None and "RuntimeError" in reason and len(reason) <= 2000
