"""Each runner's run_once, called directly: what it takes in, steps, deletes or sends."""

from __future__ import annotations

import multiprocessing.context
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from daemon.app import App
from daemon.clock import MovableClock, SystemClock
from daemon.maildirs import deliver_to_maildir
from daemon.runners.backfill import ImportJob
from daemon.sources.maildir import MaildirSource
from daemon.store.models import (
    Attachment,
    EscalationStep,
    OutboxMessage,
    SourceItem,
    Ticket,
)
from handlers import privacy

DATA = Path(__file__).parent / "data"
# The corpus is dated early November; these tests are not about ack_max_age.
CORPUS = '[intake]\nack_max_age = "365 days"\n'
STAFF = """
[escalation]
supervisors = ["boss@example.org"]

[[staff]]
address = "boss@example.org"
language = "zh-CN"
"""


def drop(app: App, *names: str) -> Path:
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    for name in names:
        deliver_to_maildir(inbox, (DATA / name).read_bytes(), name=name)
    return inbox


def count(app: App, model: type) -> int:
    with app.reads() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


# -- intake ---------------------------------------------------------------------------------


def test_intake_opens_a_case_from_a_maildir_message_and_settles_it(make_app) -> None:
    app: App = make_app(CORPUS)
    inbox = drop(app, "en-plain.eml")
    summary = app.intake.run_once()
    assert summary.outcomes["ticket"] == 1 and len(summary.opened) == 1
    with app.reads() as session:
        (ticket,) = session.scalars(select(Ticket)).all()
        item = session.scalars(select(SourceItem)).one()
    assert ticket.number == summary.opened[0]
    assert (item.key, item.outcome, item.ticket_id) == ("en-plain.eml", "ticket", ticket.id)
    assert list((inbox / "new").iterdir()) == []  # settled after commit: moved to cur/
    assert [p.name for p in (inbox / "cur").iterdir()] == ["en-plain.eml:2,S"]
    assert count(app, OutboxMessage) == 1  # the acknowledgement, queued, not sent
    assert app.intake.run_once().work_done == 0  # nothing left: the next round is empty


def test_intake_quarantines_a_raising_item_and_keeps_its_neighbours(
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
    summary = app.intake.run_once()
    assert summary.outcomes["ticket"] == 2 and summary.outcomes["quarantined"] == 1
    ((source, item, how, why),) = summary.set_aside
    assert (source, how) == ("local", "quarantined")
    assert "internal error while processing: RuntimeError: template exploded" in why
    assert count(app, Ticket) == 2 and count(app, SourceItem) == 3
    quarantine = app.config.mailboxes[0].quarantine_path
    assert quarantine is not None
    assert [p.name for p in (quarantine / "new").iterdir()] == [item]


def test_intake_leaves_a_mailbox_an_import_holds(make_app) -> None:
    app: App = make_app(CORPUS)
    inbox = drop(app, "en-plain.eml")
    (source,) = app.sources
    app.claims.claim(source, app.clock.now() + timedelta(minutes=10))
    assert app.claims.held(source)
    assert app.intake.run_once().work_done == 0
    assert [p.name for p in (inbox / "new").iterdir()] == ["en-plain.eml"]
    app.claims.claim(source, None)
    assert app.intake.run_once().outcomes["ticket"] == 1


# -- backfill -------------------------------------------------------------------------------


def test_backfill_takes_in_mail_from_since_and_skips_older_sending_nothing(make_app) -> None:
    app: App = make_app(CORPUS)
    drop(app, "en-plain.eml", "rfc2231-attachment-zh.eml")  # 10 and 8 November
    (source,) = app.sources
    assert isinstance(source, MaildirSource)
    since = datetime(2026, 11, 9, tzinfo=UTC)
    job = ImportJob(source, since, app.clock.now(), dry_run=False)
    summary = app.backfill.run_once(job)
    assert summary.outcomes["ticket"] == 1 and summary.outcomes["skipped"] == 1
    assert not job.done and job.after is not None
    assert app.backfill.run_once(job).work_done == 0 and job.done  # the mailbox has no more
    with app.reads() as session:
        created = session.scalars(select(Ticket.created_at)).one()
    assert created.astimezone(UTC) == datetime(2026, 11, 10, 13, 30, tzinfo=UTC)  # its own date
    assert count(app, OutboxMessage) == 0  # an import sends no mail


# -- clocks ---------------------------------------------------------------------------------


def test_clocks_take_an_sla_step_when_the_clock_passes_a_deadline(make_app) -> None:
    app: App = make_app(CORPUS + STAFF)
    drop(app, "en-plain.eml")
    app.intake.run_once()
    app.clocks.run_once()
    assert count(app, EscalationStep) == 0  # nothing due yet
    assert isinstance(app.clock, MovableClock)
    app.clock.move(timedelta(days=14))  # past the acceptance and first-response deadlines
    summary = app.clocks.run_once()
    assert summary.swept > 0
    with app.reads() as session:
        steps = session.scalars(select(EscalationStep.step)).all()
    assert steps and "level1" in steps
    assert app.clocks.run_once().swept == 0  # each step once


def test_clocks_delete_an_erased_attachments_file_after_the_grace_hour(make_app) -> None:
    app: App = make_app(CORPUS)
    drop(app, "rfc2231-attachment-zh.eml")
    app.intake.run_once()
    with app.sessions.begin() as session:
        attachments = session.scalars(select(Attachment)).all()
        for attachment in attachments:
            attachment.content_type = privacy.ERASED_TYPE
        paths = {app.blobs.path(a.sha256) for a in attachments}
    assert len(paths) == 3

    assert app.clocks.collect_files() == (0, 3)  # stored just now: they wait
    assert all(path.exists() for path in paths)
    two_hours_ago = time.time() - 2 * 3600
    for path in paths:
        os.utime(path, (two_hours_ago, two_hours_ago))
    assert app.clocks.collect_files() == (3, 0)
    assert not any(path.exists() for path in paths)
    with app.reads() as session:
        gone = set(session.scalars(select(Attachment.content_type)))
    assert gone == {privacy.ERASED_GONE}


def test_files_to_collect_leaves_a_file_another_case_still_names(make_app) -> None:
    app: App = make_app(CORPUS)
    drop(app, "rfc2231-attachment-zh.eml")
    app.intake.run_once()
    now = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    with app.sessions.begin() as session:
        kept = session.scalars(select(Attachment).order_by(Attachment.id)).first()
        assert kept is not None
        erased = Attachment(
            entry_id=kept.entry_id,
            filename="[erased]",
            content_type=privacy.ERASED_TYPE,
            size=kept.size,
            sha256=kept.sha256,
        )
        session.add(erased)
        session.flush()
        files = privacy.files_to_collect(session, now)
        assert files.unreferenced == set() and files.pending == [erased]
        assert files.touched_after == now - privacy.FILE_GRACE
        files.settle(waiting=set())
        assert erased.content_type == privacy.ERASED_GONE  # left to the case that names it
    assert app.blobs.path(kept.sha256).exists()


# -- delivery -------------------------------------------------------------------------------


def test_delivery_sends_a_queued_outbox_row_to_the_maildir_outbox(make_app) -> None:
    app: App = make_app(CORPUS)
    drop(app, "en-plain.eml")
    app.intake.run_once()
    summary = app.delivery.run_once()
    assert (summary.sent, summary.not_sent) == (1, 0)
    with app.reads() as session:
        row = session.scalars(select(OutboxMessage)).one()
    assert row.status == "sent"
    written = list((app.config.outbox_dir / "new").iterdir())
    assert len(written) == 1 and row.recipient.encode() in written[0].read_bytes()
    assert app.delivery.run_once().sent == 0  # sent once


def test_delivery_beside_intake_in_a_thread_sends_what_intake_queued(make_app) -> None:
    app: App = make_app(CORPUS)
    drop(app, "en-plain.eml", "gb18030.eml")
    summary = app.delivery.beside_in_thread(app.intake.run_once)
    assert summary.outcomes["ticket"] == 2 and summary.sent == 2
    assert len(list((app.config.outbox_dir / "new").iterdir())) == 2


def test_delivery_beside_intake_in_a_process_sends_what_intake_queued(make_app) -> None:
    _two_cases_delivered_beside_intake_in_a_process(make_app(CORPUS))


def _two_cases_delivered_beside_intake_in_a_process(configured: App) -> None:
    app = App(configured.config)  # the system clock, which the delivery process shares
    try:
        drop(app, "en-plain.eml", "gb18030.eml")
        summary = app.delivery.beside_in_process(app.intake.run_once)
        with app.reads() as session:
            statuses = session.scalars(select(OutboxMessage.status)).all()
    finally:
        app.close()
    assert summary.outcomes["ticket"] == 2 and (summary.sent, summary.not_sent) == (2, 0)
    assert statuses == ["sent", "sent"]
    assert len(list((app.config.outbox_dir / "new").iterdir())) == 2


def test_a_delivery_process_that_cannot_start_costs_no_mail(
    make_app, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No process to be had (limits, memory): intake goes on, and what it queued is delivered
    in turn once it is done."""

    def refused(self: object) -> None:
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.context.ForkServerProcess, "start", refused)
    _two_cases_delivered_beside_intake_in_a_process(make_app(CORPUS))
    assert "event=outbox.aside_failed" in caplog.text and "Resource temporarily" in caplog.text


def test_only_the_system_clock_is_shared_with_a_child_process() -> None:
    assert SystemClock().shared_with_children
    assert not MovableClock(datetime(2026, 11, 24, tzinfo=UTC)).shared_with_children
