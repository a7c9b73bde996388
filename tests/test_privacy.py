"""Personal data (PIPL): `privacy export`, `privacy erase`, and retention of closed cases."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from daemon.app import App
from daemon.cli import main
from daemon.clock import MovableClock
from daemon.maildirs import deliver_to_maildir
from daemon.store.models import Attachment, OutboxMessage, SourceItem, Ticket, TimelineEntry
from handlers import privacy, staff

ALICE, BOB = "alice@example.cn", "bob@example.cn"
PHOTO = b"\xff\xd8\xff\xe0 alice's kettle photo"


def complaint(sender: str, subject: str, text: str, photo: bytes | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "support@example.com", subject
    msg["Message-ID"] = make_msgid(domain="example.cn")
    msg["Date"] = "Tue, 24 Nov 2026 09:00:00 +0800"
    msg.set_content(text)
    if photo is not None:
        msg.add_attachment(photo, maintype="image", subtype="jpeg", filename="kettle.jpg")
    return msg.as_bytes()


def drop(app: App, raw: bytes) -> None:
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    deliver_to_maildir(inbox, raw)


def number_of(app: App, email: str) -> str:
    with app.sessions() as session:
        found = session.scalar(select(Ticket.number).where(Ticket.complainant_email == email))
    assert found is not None
    return found


def outbox_files(app: App) -> list[Path]:
    """The mails in the Maildir outbox, new/ and (read by someone, flags set) cur/."""
    box = app.config.outbox_dir
    return [*(box / "new").iterdir(), *(box / "cur").iterdir()]


SUPERVISED = '[escalation]\nsupervisors = ["lead@example.com"]\n'


def two_cases(app: App) -> tuple[str, str]:
    """Alice's urgent case (with a photo; alerts and a digest name it), Bob's case, Alice's mail
    on Bob's case, and her vacation auto-reply, which becomes no case."""
    text = "张丽 13900001111：电水壶漏电，要求退款。"
    drop(app, complaint(ALICE, "电水壶漏电", text, PHOTO))
    drop(app, complaint(BOB, "快递丢件", "王刚：快递丢件一周了。"))
    app.run_once()
    alice, bob = number_of(app, ALICE), number_of(app, BOB)
    drop(app, complaint(ALICE, f"[{bob}] 我也遇到了", "我是他的邻居，同一家快递也丢了。"))
    away = EmailMessage()
    away["From"], away["To"], away["Subject"] = ALICE, "support@example.com", "休假自动回复"
    away["Auto-Submitted"], away["Message-ID"] = "auto-replied", make_msgid(domain="example.cn")
    away.set_content("张丽休假中，13900001111 有事请打电话。")
    drop(app, away.as_bytes())
    app.run_once()  # the 09:00 digest is due: it lists her urgent case
    return alice, bob


def reject(app: App, number: str) -> None:
    with app.sessions.begin() as session:
        ticket = session.scalars(select(Ticket).where(Ticket.number == number)).one()
        staff.set_fields(
            session, app.services, ticket, actor="agent@example.com", now=app.clock.now(),
            status="rejected", reason="不属于受理范围",
        )  # fmt: skip


def test_export_holds_everything_about_one_person_and_nobody_else(make_app) -> None:
    app = make_app(SUPERVISED)
    alice, bob = two_cases(app)
    with app.sessions() as session:
        data = privacy.export_person(
            session, " Alice@Example.CN ", app.config.timezone, app.clock.now()
        )
    json.dumps(data, ensure_ascii=False)  # it is JSON

    assert data["email"] == ALICE and [c["number"] for c in data["cases"]] == [alice]
    case = data["cases"][0]
    assert case["complainant"]["email"] == ALICE
    texts = [e["text"] or "" for e in case["timeline"]]
    assert any("13900001111" in t for t in texts)  # her words, as taken in
    assert [a["filename"] for e in case["timeline"] for a in e["attachments"]] == ["kettle.jpg"]
    [elsewhere] = data["entries_on_other_cases"]
    assert elsewhere["case"] == bob and "邻居" in elsewhere["text"]
    originals = {o["outcome"]: base64.b64decode(o["raw_base64"]) for o in data["originals"]}
    assert sorted(originals) == ["entry", "ignored", "ticket"]  # the auto-reply too
    assert all(b"alice@example.cn" in raw for raw in originals.values())
    mail = {(m["recipient"], m["kind"]) for m in data["mail"]}
    assert (ALICE, "ack") in mail and ("lead@example.com", "urgent") in mail  # about her case
    assert [m["kind"] for m in data["digests_naming_their_cases"]] == ["digest"]
    assert BOB not in json.dumps(data) and "王刚" not in json.dumps(data, ensure_ascii=False)


def test_erase_is_refused_while_a_case_is_handled_then_erases_and_keeps_the_counts(
    make_app, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app = make_app(SUPERVISED)
    alice, bob = two_cases(app)
    config = ["--config", str(tmp_path / "caseloop.toml")]
    assert main([*config, "privacy", "erase", privacy.ERASED_ADDRESS]) == 2

    assert main([*config, "privacy", "erase", ALICE]) == 2
    assert f"cases still being handled: {alice}" in capsys.readouterr().err
    reject(app, alice)
    with app.sessions() as session:
        blob = session.scalars(select(Attachment.sha256)).one()
    hours_ago = time.time() - 2 * 3600  # stored a while ago: no mail being taken in holds it
    os.utime(app.blobs.path(blob), (hours_ago, hours_ago))

    assert main([*config, "privacy", "erase", ALICE]) == 0
    out = capsys.readouterr().out
    assert f"erased: cases {alice};" in out and "1 attachments (1 files deleted)" in out
    assert out.count("also held outside the database, erase it there: source local") == 3
    # Our own copies of the mail sent to her (and of the digest naming her) are gone from the
    # Maildir outbox; Bob's stay.
    copies = [p.read_bytes() for p in outbox_files(app)]
    assert copies and all(ALICE.encode() not in c and "张丽".encode() not in c for c in copies)
    assert any(BOB.encode() in c for c in copies)
    assert "copies of sent mail from the outbox folder" in out

    with app.sessions() as session:
        mine = session.scalars(select(Ticket).where(Ticket.number == alice)).one()
        assert mine.complainant_email == privacy.ERASED_ADDRESS and mine.erased_at is not None
        assert (mine.complainant_name, mine.complainant_phone, mine.extra) == (None, None, {})
        assert (mine.status, mine.category, mine.subject) == (
            "rejected",
            "product_quality",
            "[erased]",
        )
        dump = json.dumps(
            [(e.actor, e.subject, e.text, e.data) for e in mine.timeline], ensure_ascii=False
        )
        assert "13900001111" not in dump and ALICE not in dump and "张丽" not in dump
        assert mine.timeline[-1].text == "personal data erased: at the person's request"
        theirs = session.scalars(select(Ticket).where(Ticket.number == bob)).one()
        on_bob = [(e.actor, e.text) for e in theirs.timeline if e.kind == "message_in"]
        assert on_bob[0] == (BOB, "王刚：快递丢件一周了。")  # Bob's own words stay
        assert on_bob[1] == (privacy.ERASED_ADDRESS, "[erased]")  # Alice's on his case do not
        kept = session.execute(select(SourceItem.ticket_id, SourceItem.raw.is_not(None))).all()
        # Bob's own mail is kept; Alice's (on her case, on his, her auto-reply) is not.
        expected = [(mine.id, False), (theirs.id, True), (theirs.id, False), (None, False)]
        assert sorted(kept, key=repr) == sorted(expected, key=repr)
        assert session.scalar(select(func.count()).select_from(Ticket)) == 2
        rows = session.scalars(select(OutboxMessage)).all()
        everything = b"".join(
            r.raw + (r.subject + r.recipient + (r.last_error or "")).encode() for r in rows
        )
        for trace in (ALICE, "张丽", "13900001111", "电水壶"):
            assert trace.encode() not in everything
        assert any(r.kind == "digest" and r.raw == b"" for r in rows)
        assert all(r.raw for r in rows if r.recipient == BOB)  # Bob's acknowledgement stays
        items = session.scalars(select(SourceItem.raw)).all()
        assert not any(b"13900001111" in raw or ALICE.encode() in raw for raw in items if raw)
        assert session.scalars(select(Attachment.filename)).one() == "[erased]"
        erased_mail = next(r.id for r in rows if r.raw == b"")
    assert not app.blobs.path(blob).exists()
    # Nothing more is done on the erased case, by staff or anyone.
    assert main([*config, "tickets", "note", alice, "--message", "张丽又来电"]) == 2
    with app.sessions.begin() as session:  # as if it had failed: its retry sends nothing
        session.get(OutboxMessage, erased_mail).status = "failed"  # type: ignore[union-attr]
    assert main([*config, "outbox", "retry", str(erased_mail)]) == 2
    assert "was erased (privacy): nothing to send" in capsys.readouterr().err
    with app.sessions() as session:
        again = privacy.export_person(session, ALICE, app.config.timezone, app.clock.now())
    assert again["cases"] == [] and again["originals"] == [] and again["mail"] == []

    # She writes again quoting the old number: a new case, not an entry on the erased one.
    drop(app, complaint(ALICE, f"Re: [{alice}] 还没处理", "电水壶的事还没有处理。"))
    summary = app.run_once()
    assert summary.outcomes["ticket"] == 1 and any("was erased" in n for n in summary.notes)


def test_retention_erases_cases_closed_longer_than_retain_closed(
    make_app, clock: MovableClock
) -> None:
    app = make_app(SUPERVISED + '[privacy]\nretain_closed = "30 days"\n')
    alice, bob = two_cases(app)
    # Carol sends the same photo: its one file stays while her case holds it.
    drop(app, complaint("carol@example.cn", "同款电水壶漏水", "同款，也漏水。", PHOTO))
    app.run_once()
    reject(app, alice)
    with app.sessions() as session:
        photo = session.scalars(select(Attachment.sha256)).first()
    assert photo is not None
    clock.move(timedelta(days=20))  # a third party writes on the rejected case: it does not
    drop(app, complaint("dave@example.cn", f"[{alice}] 补充", "我是张丽的同事。"))  # restart it
    app.run_once()
    clock.move(timedelta(days=9))
    app.sweep()
    with app.sessions() as session:
        assert session.scalar(select(func.count()).where(Ticket.erased_at.is_not(None))) == 0
    clock.move(timedelta(days=2))
    app.sweep()
    with app.sessions() as session:
        erased = dict(session.execute(select(Ticket.number, Ticket.erased_at)).all())
        notes = session.scalars(
            select(TimelineEntry.text).where(
                TimelineEntry.kind == "note", TimelineEntry.actor == "caseloop"
            )
        ).all()
    assert erased[alice] is not None and erased[bob] is None  # Bob's case is still open
    assert "personal data erased: retention (30 days after closing)" in notes
    assert not any(ALICE.encode() in p.read_bytes() for p in outbox_files(app))
    assert app.blobs.path(photo).exists()
    before = erased[alice]
    clock.move(timedelta(hours=2))  # the next retention run
    app.sweep()  # once only
    with app.sessions() as session:
        assert session.scalar(select(Ticket.erased_at).where(Ticket.number == alice)) == before
