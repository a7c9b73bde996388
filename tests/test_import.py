"""`caseloop import` (SPEC §2): a deliberate backfill registers old mail and sends nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import imap_mailbox_toml
from sqlalchemy import func, select

from daemon.app import App
from daemon.cli import main
from daemon.maildirs import deliver_to_maildir
from daemon.store.models import Lease, OutboxMessage, SourceItem, Ticket, TimelineEntry
from handlers import digest

# Staff, routing and supervisors: live intake would acknowledge, assign and alert.
STAFFED = """
[escalation]
supervisors = ["lead@example.com"]
urgent_notify = ["compliance@example.com"]
[[staff]]
address = "agent@example.com"
groups = ["quality"]
[[routing]]
category = "product_quality"
group = "quality"
"""


def old_mail(sender: str, subject: str, text: str, date: str, msgid: str, **headers: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "support@example.com", subject
    msg["Date"], msg["Message-ID"] = date, msgid
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(text)
    if "漏电" in subject:  # with the receipt: a dry run must not store it
        msg.add_attachment(b"%PDF-1.4 receipt", maintype="application", subtype="pdf",
                           filename="发票.pdf")  # fmt: skip
    return msg.as_bytes()


HISTORY = [
    old_mail("li@example.cn", "电热水器漏电", "李明：电热水器漏电，洗澡时被电了一下，要求赔偿。",
             "Mon, 02 Mar 2026 09:30:00 +0800", "<kettle-1@example.cn>"),
    old_mail("li@example.cn", "Re: 电热水器漏电", "补充：型号 RX-200，购买于2月。",
             "Thu, 05 Mar 2026 20:00:00 +0800", "<kettle-2@example.cn>",
             In_Reply_To="<kettle-1@example.cn>"),
    old_mail("wang@example.cn", "快递丢件", "王强：去年的快递丢了。",
             "Sat, 20 Dec 2025 10:00:00 +0800", "<parcel-1@example.cn>"),
]  # fmt: skip


def cli(tmp_path: Path, *args: str) -> int:
    return main(["--config", str(tmp_path / "caseloop.toml"), *args])


def staffed_inbox(make_app: Any, *mails: bytes) -> tuple[App, Path]:
    """An app with staff to notify, and these mails waiting in its Maildir inbox."""
    app: App = make_app(STAFFED)
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    for raw in mails:
        deliver_to_maildir(inbox, raw)
    return app, inbox


def test_a_dry_run_takes_nothing_then_the_import_registers_as_of_each_date_and_sends_nothing(
    make_app: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    app, inbox = staffed_inbox(make_app, *HISTORY)

    assert cli(tmp_path, "import", "--source", "local", "--since", "2026-01-01", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "2 messages dated 2026-01-01 or later would be taken in" in out
    assert "1 are older or undated and would be skipped" in out
    assert len(list((inbox / "new").iterdir())) == 3
    with app.sessions() as session:
        assert session.scalar(select(func.count()).select_from(SourceItem)) == 0
    blobs = app.config.blobs_dir
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))

    assert cli(tmp_path, "import", "--source", "local", "--since", "2026-01-01") == 0
    out = capsys.readouterr().out
    assert "imported: 1 cases, 1 replies on cases" in out and "skipped 1 dated" in out
    assert out.rstrip().endswith("no mail sent")
    with app.sessions() as session:
        case = session.scalars(select(Ticket)).one()
        entries = session.scalars(
            select(TimelineEntry).where(TimelineEntry.ticket_id == case.id)
        ).all()
        outbox = session.scalar(select(func.count()).select_from(OutboxMessage))
        skipped = session.scalars(select(SourceItem).where(SourceItem.outcome == "skipped")).one()
    # Numbered, dated and counted when the consumer wrote, in received, with no clocks.
    assert case.number == "TS-20260302-0001" and case.status == "received"
    assert case.created_at == datetime(2026, 3, 2, 1, 30, tzinfo=UTC)
    assert (case.priority, case.category, case.assignee) == ("urgent", "product_quality", None)
    assert case.extra.get("imported") is True and case.acknowledged_at is None
    assert (case.due_first_response, case.due_acceptance, case.sla_next_check_at) == (None,) * 3
    assert [(e.kind, e.at) for e in entries] == [
        ("message_in", datetime(2026, 3, 2, 1, 30, tzinfo=UTC)),
        ("message_in", datetime(2026, 3, 5, 12, 0, tzinfo=UTC)),
    ]
    assert outbox == 0
    assert skipped.raw is None and "before --since 2026-01-01" in (skipped.reason or "")
    assert list((inbox / "new").iterdir()) == [] and len(list((inbox / "cur").iterdir())) == 3
    assert sum(1 for p in blobs.rglob("*") if p.is_file()) == 1  # the real import keeps it

    # The supervisors' digest lists live cases, not the importer's backlog.
    with app.reads() as session:
        assert case.number not in digest.print_digest(session, app.services, app.clock.now())

    # Again: nothing left to take. The daemon then runs no clock on the imported case: the
    # supervisors' digest may list it, nobody is acknowledged, assigned or reminded.
    assert cli(tmp_path, "import", "--source", "local", "--since", "2026-01-01") == 0
    assert "imported: 0 cases, 0 replies" in capsys.readouterr().out
    app.run_once()
    with app.sessions() as session:
        kinds = set(session.scalars(select(OutboxMessage.kind)))
    assert kinds <= {"digest"}

    # Now the complainant writes again, live: the case is handled from now on.
    deliver_to_maildir(inbox, old_mail("li@example.cn", "Re: 电热水器漏电", "还没人处理吗？",
                                       "Tue, 24 Nov 2026 09:50:00 +0800", "<kettle-3@example.cn>",
                                       In_Reply_To="<kettle-2@example.cn>"))  # fmt: skip
    app.run_once()
    with app.sessions() as session:
        woken = session.scalars(select(Ticket)).one()
        kinds = set(session.scalars(select(OutboxMessage.kind)))
    assert "imported" not in woken.extra and woken.assignee == "agent@example.com"
    assert woken.due_first_response is not None and woken.sla_next_check_at is not None
    assert {"assigned", "urgent"} <= kinds


def test_import_names_a_mailbox(make_app: Any, tmp_path: Path) -> None:
    make_app()
    assert cli(tmp_path, "import", "--source", "nosuch", "--since", "2026-01-01") == 2
    with pytest.raises(SystemExit) as bad_date:  # argparse's own usage error
        cli(tmp_path, "import", "--source", "local", "--since", "1 March")
    assert bad_date.value.code == 2


def test_an_imap_mailbox_is_imported_in_batches_and_old_mail_moves_on_unregistered(
    make_app: Any, imap_box: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Batches of two: the dry run reads on through them, the import settles each.
    make_app(imap_mailbox_toml(imap_box, tmp_path) + "[intake]\nbatch_size = 2\n")
    extra = [
        old_mail(f"c{i}@example.cn", f"投诉{i}", f"第{i}封：商品坏了。",
                 "Tue, 10 Mar 2026 10:00:00 +0800", f"<more-{i}@example.cn>")
        for i in range(3)
    ]  # fmt: skip
    imap_box.append_many([*HISTORY, *extra])

    assert cli(tmp_path, "import", "--source", "support", "--since", "2026-01-01", "--dry-run") == 0
    assert "5 messages dated 2026-01-01 or later would be taken in" in capsys.readouterr().out
    assert len(imap_box.messages("INBOX")) == 6

    assert cli(tmp_path, "import", "--source", "support", "--since", "2026-01-01") == 0
    assert "imported: 4 cases, 1 replies on cases" in capsys.readouterr().out
    assert imap_box.messages("INBOX") == []
    processed = f"caseloop{imap_box.separator()}processed"
    assert len(imap_box.messages(processed)) == 6  # the skipped one moved on too


def test_undated_mail_is_skipped_newer_mail_is_left_and_the_daemon_waits_for_the_import(
    make_app: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from daemon.app import ImportBusy

    undated = old_mail("zhao@example.cn", "没有日期", "赵：投诉。", "", "<undated@example.cn>")
    live = old_mail("qian@example.cn", "今天的投诉", "钱：刚买的就坏了。",
                    "Fri, 01 Jan 2100 10:00:00 +0800", "<live@example.cn>")  # fmt: skip
    app, inbox = staffed_inbox(make_app, HISTORY[0], undated, live)

    # While an import holds the mailbox, the daemon leaves it alone, and so does a second import.
    source = app.sources[0]
    app.claim_import(source, datetime(2100, 1, 1, tzinfo=UTC))
    assert app.run_once().outcomes["ticket"] == 0
    assert len(list((inbox / "new").iterdir())) == 3
    moment = app.clock.now()
    with app.sessions.begin() as session:  # as if another process held it
        lease = session.get(Lease, "source:local")
        assert lease is not None and lease.holder == app.claims.holder
        lease.holder = "import:elsewhere:1:abc"
    assert cli(tmp_path, "import", "--source", "local", "--since", "2026-01-01") == 2
    assert "an import of local is running" in capsys.readouterr().err
    with pytest.raises(ImportBusy):
        app.claim_import(source, moment)
    assert app.run_once().outcomes["ticket"] == 0  # nor does the daemon take it back
    with app.sessions.begin() as session:  # that import ended
        lease = session.get(Lease, "source:local")
        assert lease is not None
        lease.holder = None

    assert cli(tmp_path, "import", "--source", "local", "--since", "2026-01-01") == 0
    out = capsys.readouterr().out
    assert "imported: 1 cases" in out and "skipped 1 dated" in out and "left 1 newer" in out
    with app.sessions() as session:
        reasons = dict(session.execute(select(SourceItem.outcome, SourceItem.reason)).all())
    assert reasons["skipped"] == "no date: not known to be from --since on"
    [left] = list((inbox / "new").iterdir())  # the newer mail is the daemon's
    assert b"live@example.cn" in left.read_bytes()
