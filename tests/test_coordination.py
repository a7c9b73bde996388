"""Several instances on one database (daemon/store/coordination.py, daemon/runners/shares.py):
leases on sources and jobs, outbox claims, the instance registry, case numbers under
concurrency, scheduled jobs once, and SQLite's one instance."""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import date, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_caseloop, start_caseloop
from sqlalchemy import func, select, update

from daemon.app import App, InstanceRunning
from daemon.maildirs import deliver_to_maildir
from daemon.runners.summary import Summary
from daemon.sender import send_due
from daemon.store import coordination, writes
from daemon.store.models import Lease, OutboxMessage, SourceItem, Ticket, TimelineEntry
from handlers.workflow import apply_transition

TTL = timedelta(seconds=20)
FOUR_BOXES = "".join(
    f'[[mailboxes]]\nname = "box{i}"\ntype = "maildir"\naddress = "support@example.com"\n'
    f'path = "{{root}}/box{i}"\nquarantine_path = "{{root}}/q{i}"\n'
    for i in range(4)
)

# The newest migration's revision (files are named NNNN_what.py, NNNN the revision)
HEAD = max(p.name[:4] for p in (Path(__file__).parents[1] / "migrations/versions").glob("0*.py"))


def complaint(i: int, message_id: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"consumer{i}@example.net"
    msg["To"] = "support@example.com"
    msg["Subject"] = f"电水壶漏水 {i}"
    msg["Message-ID"] = message_id or f"<coord-{i}@example.net>"
    msg.set_content(f"我买的电水壶漏水，订单号 2026{i:08d}，要求退货退款。")
    return msg.as_bytes()


def boxes(app: App) -> list[Path]:
    return [box.path for box in app.config.mailboxes if box.path is not None]


def holder_of(app: App, name: str) -> str | None:
    with app.sessions() as session:
        lease = session.get(Lease, name)
        return lease.holder if lease is not None else None


# -- leases -----------------------------------------------------------------------------------


def test_a_lease_has_one_holder_until_it_expires_and_an_import_outranks_an_instance(
    make_app: Any,
) -> None:
    app: App = make_app()
    now = app.clock.now()
    with app.sessions.begin() as s:
        assert coordination.take(s, "source:x", "a", now, TTL)
        assert not coordination.take(s, "source:x", "b", now + TTL / 2, TTL)
        assert coordination.take(s, "source:x", "a", now + TTL / 2, TTL)  # renewed by its holder
        assert not coordination.take(s, "source:x", "b", now + TTL, TTL)  # renewed: still a's
        assert coordination.take(s, "source:x", "b", now + TTL * 2, TTL)  # lapsed: taken over
        assert not coordination.hold(s, "source:x", "a", now + TTL * 2, TTL)  # a's batch: lost
        assert coordination.hold(s, "source:x", "b", now + TTL * 2, TTL)
        imp = coordination.IMPORT_PREFIX + "h:1:x"
        assert coordination.take(s, "source:x", imp, now + TTL * 2, timedelta(hours=1))
        assert not coordination.take(s, "source:x", "b", now + TTL * 3, TTL)  # not back
        other = coordination.IMPORT_PREFIX + "h:2:y"
        assert not coordination.take(s, "source:x", other, now + TTL * 3, TTL)  # one import
        coordination.release(s, "source:x", imp)
        assert coordination.take(s, "source:x", "b", now + TTL * 3, TTL)


def test_a_job_runs_once_per_period_across_instances(make_app: Any) -> None:
    app: App = make_app()
    now, hour = app.clock.now(), timedelta(hours=1)
    with app.sessions.begin() as s:
        assert coordination.once_per(s, "job:retention", "a", now, hour)
        assert not coordination.once_per(s, "job:retention", "b", now, hour)
        assert not coordination.once_per(s, "job:retention", "a", now + hour / 2, hour)
        assert coordination.once_per(s, "job:retention", "b", now + hour, hour)


def test_instances_share_the_sources_fairly_and_a_newcomer_gets_its_share(
    make_app: Any, tmp_path: Path
) -> None:
    first: App = make_app(FOUR_BOXES.format(root=tmp_path), root=tmp_path / "a")
    second: App = make_app(FOUR_BOXES.format(root=tmp_path), root=tmp_path / "b")
    first.shares.start("run")
    assert all(first.shares.take(s) for s in first.sources)  # alone: all four are its share
    second.shares.start("run")  # a second instance: two each, at the first's next batches
    assert [second.shares.take(s) for s in second.sources] == [False] * 4
    assert [first.shares.take(s) for s in first.sources] == [False, False, True, True]
    assert [second.shares.take(s) for s in second.sources] == [True, True, False, False]
    holders = Counter(holder_of(first, f"source:box{i}") for i in range(4))
    assert holders == {first.instance_id: 2, second.instance_id: 2}
    with first.sessions() as session:
        alive = {i.id for i in coordination.alive(session, first.clock.now(), TTL)}
    assert alive == {first.instance_id, second.instance_id}

    # The second stops cleanly: its leases are free at once and the first takes them all.
    second.shares.stop()
    assert all(first.shares.take(s) for s in first.sources)


def test_a_killed_instance_s_sources_and_outbox_claims_go_to_the_living(
    make_app: Any, tmp_path: Path
) -> None:
    first: App = make_app(FOUR_BOXES.format(root=tmp_path), root=tmp_path / "a")
    second: App = make_app(FOUR_BOXES.format(root=tmp_path), root=tmp_path / "b")
    for app in (first, second):
        app.shares.start("run")
    assert [first.shares.take(s) for s in first.sources] == [True, True, False, False]
    for i, box in enumerate(boxes(first)):
        deliver_to_maildir(box, complaint(i))
    first.intake.run_once()
    with first.sessions.begin() as s:  # the first claims the outbox, then dies (no stop())
        claimed = coordination.claim_outbox(
            s, first.instance_id, first.clock.now(), first.clock.now() + timedelta(hours=1), 50
        )
    assert claimed
    first.shares._beating.set()  # its heart stops

    assert [second.shares.take(s) for s in second.sources] == [False, False, True, True]
    first.clock.move(TTL * 2 + timedelta(seconds=1))
    second.shares.beat()  # the living find it silent for two leases: dead
    assert [second.shares.take(s) for s in second.sources] == [True] * 4
    with second.sessions.begin() as s:
        assert coordination.claim_outbox(
            s, second.instance_id, second.clock.now(), second.clock.now() + TTL, 50
        ) == claimed  # fmt: skip


def test_a_batch_whose_lease_was_taken_over_rolls_back_and_settles_nothing(
    make_app: Any,
) -> None:
    app: App = make_app()
    (source,) = app.sources
    inbox = boxes(app)[0]
    deliver_to_maildir(inbox, complaint(1))
    items = source.fetch(10)
    assert app.shares.take(source)
    with app.sessions.begin() as session:  # meanwhile it lapsed and another instance took it
        session.execute(update(Lease).values(holder="elsewhere:1:x"))
    prepared = app.intake.preparer.prepare_all(items)
    app.intake.take_in(source, prepared, [], Summary())
    with app.reads() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 0
        assert session.scalar(select(func.count()).select_from(SourceItem)) == 0
    assert len(list((inbox / "new").iterdir())) == 1  # still there for the holder


# -- outbox claims ----------------------------------------------------------------------------


def test_two_instances_delivering_at_once_send_each_row_once(make_app: Any, tmp_path: Path) -> None:
    first: App = make_app(root=tmp_path / "a")
    second: App = make_app(root=tmp_path / "b")
    for i in range(120):
        deliver_to_maildir(boxes(first)[0], complaint(i))
    while first.intake.run_once().work_done:
        pass
    barrier = threading.Barrier(2)

    def deliver(app: App) -> None:
        barrier.wait()
        while send_due(app.sessions, app.reads, app.transport, app.clock, "s@example.com",
                       limit=10, holder=app.instance_id)[0]:  # fmt: skip
            pass

    threads = [threading.Thread(target=deliver, args=(a,)) for a in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    written = {
        app.instance_id: [p.name for p in (app.config.outbox_dir / "new").iterdir()]
        for app in (first, second)
    }
    names = written[first.instance_id] + written[second.instance_id]
    assert len(names) == 120 and len(set(names)) == 120  # each mail once, by one of them
    assert written[first.instance_id] and written[second.instance_id]  # both worked
    with first.reads() as session:
        senders = Counter(session.scalars(select(OutboxMessage.claimed_by)))
        assert session.scalar(
            select(func.count()).where(OutboxMessage.status != "sent")
        ) == 0  # fmt: skip
    assert set(senders) <= {first.instance_id, second.instance_id}


# -- concurrency on the database ----------------------------------------------------------------


def test_case_numbers_stay_unique_when_writers_race(make_app: Any) -> None:
    app: App = make_app()
    got: list[int] = []
    lock = threading.Lock()

    def bump() -> None:
        for _ in range(25):
            with app.sessions.begin() as session:
                value = writes.bump_counter(session, "TS", date(2026, 11, 24))
            with lock:
                got.append(value)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 101))


def test_one_message_id_in_two_mailboxes_taken_by_two_instances_is_one_entry(
    make_app: Any, tmp_path: Path
) -> None:
    two = FOUR_BOXES.format(root=tmp_path).split("[[mailboxes]]")[1:3]
    body = "".join("[[mailboxes]]" + part for part in two)
    first: App = make_app(body, root=tmp_path / "a")
    second: App = make_app(body, root=tmp_path / "b")
    same = complaint(7, "<cc-to-both@example.net>")  # sent to both of our addresses
    for box in boxes(first):
        deliver_to_maildir(box, same)
    first.shares.start("run")
    second.shares.start("run")
    barrier = threading.Barrier(2)
    results = {}

    def poll(app: App, index: int) -> None:
        barrier.wait()
        results[index] = app.intake.poll(app.sources[index])

    threads = [threading.Thread(target=poll, args=(a, i)) for i, a in enumerate((first, second))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = results[0].outcomes + results[1].outcomes
    assert (outcomes["ticket"], outcomes["duplicate"]) == (1, 1)
    with first.reads() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 1
        entries = session.scalar(
            select(func.count()).where(TimelineEntry.message_id == "<cc-to-both@example.net>")
        )
        assert entries == 1
        assert session.scalar(select(func.count()).select_from(SourceItem)) == 2


# -- scheduled jobs once ------------------------------------------------------------------------


def test_two_instances_sweeping_at_once_send_one_survey_per_resolution_and_one_digest(
    make_app: Any, tmp_path: Path
) -> None:
    body = (
        '[escalation]\nsupervisors = ["boss@example.com"]\ndigest_when_empty = true\n'
        'digest_cron = "* * * * *"\n'
    )
    first: App = make_app(body, root=tmp_path / "a")
    second: App = make_app(body, root=tmp_path / "b")
    for i in range(30):
        deliver_to_maildir(boxes(first)[0], complaint(i))
    while first.intake.run_once().work_done:
        pass
    with first.sessions.begin() as session:
        for ticket in session.scalars(select(Ticket)):
            for status in ("accepted", "in_progress", "resolved"):
                apply_transition(
                    session, first.services, ticket, status, actor="agent@example.com",
                    now=first.clock.now(), reason="已退款" if status == "resolved" else None,
                )  # fmt: skip
    first.clock.move(timedelta(days=6))  # Monday: the surveys are due, a digest slot passed
    barrier = threading.Barrier(2)

    def sweep(app: App) -> None:
        barrier.wait()
        app.sweep()

    threads = [threading.Thread(target=sweep, args=(a,)) for a in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with first.reads() as session:
        kinds = Counter(session.scalars(select(OutboxMessage.kind)))
        surveyed = session.scalar(
            select(func.count()).select_from(Ticket).where(Ticket.survey_sent_at.is_not(None))
        )
    assert kinds["survey"] == 30 == surveyed
    assert kinds["digest"] == 1


# -- one instance on SQLite; status and check-config --------------------------------------------


def test_a_second_instance_on_one_sqlite_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "caseloop.toml"
    config.write_text('data_dir = "caseloop-data"\n[intake]\npoll_interval = "1s"\n')
    with (tmp_path / "d.log").open("w") as log:
        daemon = start_caseloop("run", config=config, stderr=log)
    try:
        lock = tmp_path / "caseloop-data" / "caseloop.db.instance-lock"
        for _ in range(200):
            if lock.exists() and lock.read_text().startswith("pid"):
                break
            threading.Event().wait(0.05)
        second = run_caseloop("run", "--once", config=config, check=False, timeout=60)
        assert second.returncode == 2
        assert f"another caseloop instance (pid {daemon.pid} on" in second.stderr
        assert "use PostgreSQL" in second.stderr
        status = run_caseloop("status", config=config)  # reading is fine beside it
        assert f":{daemon.pid}:" in status.stdout
        assert re.search(r"holds .*source:local", status.stdout)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    assert run_caseloop("run", "--once", config=config).returncode == 0  # free again


def test_the_instance_lock_is_refused_in_process_too(tmp_path: Path) -> None:
    from daemon.store.db import InstanceLock

    held = InstanceLock.take(str(tmp_path / "x.db"))
    with pytest.raises(InstanceRunning, match="one instance"):
        InstanceLock.take(str(tmp_path / "x.db"))
    assert held is not None
    held.release()
    again = InstanceLock.take(str(tmp_path / "x.db"))
    assert again is not None
    again.release()


def test_check_config_reports_the_database_version_and_schema_and_creates_nothing(
    tmp_path: Path, pg_schema_url: str
) -> None:
    config = tmp_path / "caseloop.toml"
    config.write_text('data_dir = "data"\n')
    out = run_caseloop("check-config", config=config, check=False).stdout  # no inbox yet
    assert "database: sqlite: ok, " in out and "does not exist yet" in out
    assert not (tmp_path / "data" / "caseloop.db").exists()
    run_caseloop("run", "--once", config=config)
    out = run_caseloop("check-config", config=config).stdout
    assert "database: sqlite: ok, SQLite 3." in out and f"schema at head ({HEAD})" in out

    config.write_text(f'data_dir = "data"\n[database]\nurl = "{pg_schema_url}"\n')
    done = run_caseloop("check-config", config=config, check=False)
    assert done.returncode == 1
    assert "database: postgresql+psycopg: FAILED: PostgreSQL 1" in done.stdout
    assert f"schema at empty, head is {HEAD}: run `caseloop migrate`" in done.stdout
    run_caseloop("migrate", config=config)
    out = run_caseloop("check-config", config=config).stdout
    assert "PostgreSQL 1" in out and f"schema at head ({HEAD})" in out
