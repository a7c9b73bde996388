"""Reading ahead (daemon/prepare.py): the next batch prepared in a worker process while one is
decided; outcomes as inline, a changed item prepared again, a dead worker costing speed only."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cli_run import caseloop_env
from conftest import write_config
from sqlalchemy import create_engine, select

from daemon import children
from daemon import config as configmod
from daemon import prepare as prepare_module
from daemon.app import App
from daemon.items import Incoming
from daemon.maildirs import deliver_to_maildir
from daemon.prepare import MAX_FAILURES, Preparer, _ReadAhead, prepare_one
from daemon.store.ahead import _READ_OPENED
from daemon.store.blobs import BlobStore
from daemon.store.models import Ticket, TimelineEntry
from handlers.context import Prepared
from handlers.parse import parse_message

REPO = Path(__file__).resolve().parent.parent


def complaint(i: int, subject: str = "水壶漏水，烫伤了手") -> bytes:
    return (
        f"From: 消费者{i} <c{i}@example.cn>\r\nTo: support@example.com\r\n"
        f"Subject: =?UTF-8?B?5oqV6K+J?= {subject} {i}\r\nMessage-ID: <ahead-{i}@example.cn>\r\n"
        "Date: Sat, 05 Dec 2026 09:00:00 +0800\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        f"{subject}。第{i}号投诉，要求退款并赔偿。\r\n"
    ).encode()


def cases_by_message(app: App) -> dict[str, tuple[str, str]]:
    """Each complaint's case by the Message-ID that opened it: category and priority."""
    with app.reads() as session:
        rows = session.execute(
            select(TimelineEntry.message_id, Ticket.category, Ticket.priority)
            .join(Ticket, Ticket.id == TimelineEntry.ticket_id)
            .where(TimelineEntry.message_id.like("<ahead-%"))
        ).all()
    return {str(m): (c, p) for m, c, p in rows}


@pytest.mark.parametrize("aside", [False, True])
def test_the_next_batch_is_prepared_aside_and_the_outcomes_are_those_of_inline(
    make_app: Any, aside: bool
) -> None:
    app = make_app(f"[intake]\nbatch_size = 4\nprepare_aside = {str(aside).lower()}\n")
    if aside:
        app.intake.preparer.warm()  # up before the first batch: its start-up is not waited for
    inbox = app.config.mailboxes[0].path
    mails = [complaint(i, ["水壶漏水，烫伤了手", "快递丢件", "网课退费"][i % 3]) for i in range(11)]
    for i, raw in enumerate(mails):
        deliver_to_maildir(inbox, raw, name=f"{i:04d}.eml")
    deliver_to_maildir(inbox, b"\x00\xff not a mail at all", name="0011.eml")

    app.run_once()

    # Batches of 4 of 12: the second and third were prepared in the worker while the first
    # and second were decided (what it quarantined, the last, is redone inline); every case
    # as preparing its mail inline files it.
    assert app.intake.preparer.taken_aside == (7 if aside else 0)
    inline = [prepare_one(i, app.config, app.blobs) for i in items(*mails)]
    assert cases_by_message(app) == {
        p.message.message_id: (p.category, p.priority) for p in inline if p.message
    }
    assert len({category for category, _ in cases_by_message(app).values()}) == 3
    assert sorted(p.name for p in (inbox / "cur").iterdir()) == [
        f"{i:04d}.eml:2,S" for i in range(11)
    ]
    quarantined = app.config.mailboxes[0].quarantine_path
    assert quarantined is not None
    assert [p.name for p in (quarantined / "new").iterdir()] == ["0011.eml"]


def test_a_lone_mail_never_starts_the_worker(make_app: Any, tmp_path: Path) -> None:
    app = make_app("[intake]\nbatch_size = 4\nprepare_aside = true\n")
    deliver_to_maildir(app.config.mailboxes[0].path, complaint(1), name="one.eml")
    app.run_once()
    assert len(cases_by_message(app)) == 1
    assert app.intake.preparer._pool is None


def items(*raws: bytes) -> list[Incoming]:
    return [Incoming(source="s", key=f"k{i}", raw=raw, label=f"k{i}") for i, raw in enumerate(raws)]


@pytest.fixture
def preparer(tmp_path: Path) -> Any:
    config = configmod.load(write_config(tmp_path))
    made = Preparer(config, BlobStore(config.blobs_dir), aside=True)
    yield made
    made.close()


def test_an_item_changed_since_it_was_read_ahead_is_prepared_again(preparer: Preparer) -> None:
    first = items(complaint(1), complaint(2, "冰箱不制冷"))
    preparer.warm()
    preparer.ahead("s", first)
    for chunk in preparer._ahead["s"].chunks:
        chunk.result()  # the worker has prepared both
    changed = items(complaint(1), complaint(2, "洗衣机漏电"))  # same keys, other bytes
    done = preparer.take(preparer.pending("s"), changed)
    assert [p.message.subject for p in done if p.message] == [
        "投诉 水壶漏水，烫伤了手 1",
        "投诉 洗衣机漏电 2",
    ]
    assert preparer.taken_aside == 1  # the first came from the worker, the second not
    assert preparer.pending("s") is None  # used once


def test_a_dead_worker_costs_the_head_start_only(preparer: Preparer) -> None:
    batch = items(*(complaint(i) for i in range(200)))
    for failure in range(1, MAX_FAILURES + 1):
        preparer.warm()  # up: its chunks are waited for, not done inline at once
        preparer.ahead("s", batch)
        pool = preparer._pool
        assert pool is not None
        while not preparer._ahead["s"].chunks[0].running():  # handed to the worker, not cancellable
            time.sleep(0.001)
        for pid in list(pool._processes):
            os.kill(pid, signal.SIGKILL)
        done = preparer.take(preparer.pending("s"), batch)
        assert [p.message.message_id for p in done if p.message] == [
            f"<ahead-{i}@example.cn>" for i in range(200)
        ]
        assert all(p.outcome == "pending" and p.category != "other" for p in done)
        assert preparer._failures == failure
        assert preparer.aside is (failure < MAX_FAILURES)
    preparer.ahead("s", batch)  # read-ahead off now: nothing is started
    assert preparer._pool is None and preparer.pending("s") is None


def test_one_dead_worker_is_one_failure_for_all_the_mailboxes_it_held(
    preparer: Preparer,
) -> None:
    batch = items(*(complaint(i) for i in range(200)))
    preparer.warm()
    for source in ("a", "b", "c"):
        preparer.ahead(source, batch)
    pool = preparer._pool
    assert pool is not None
    while not preparer._ahead["a"].chunks[0].running():
        time.sleep(0.001)
    for pid in list(pool._processes):
        os.kill(pid, signal.SIGKILL)
    for source in ("a", "b", "c"):
        done = preparer.take(preparer.pending(source), batch)
        assert [p.message.message_id for p in done if p.message] == [
            f"<ahead-{i}@example.cn>" for i in range(200)
        ]
    assert preparer._failures == 1 and preparer.aside
    preparer.warm()  # a new worker, not stopped by the old one's other batches
    preparer.ahead("a", batch[:3])
    preparer._ahead["a"].chunks[0].result()
    assert len(preparer.take(preparer.pending("a"), batch[:3])) == 3
    assert preparer._failures == 0 and preparer._pool is not None


def test_what_was_read_ahead_expires_and_a_quarantine_from_the_worker_is_redone(
    preparer: Preparer, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch = items(complaint(1), complaint(2))
    preparer.warm()
    preparer.ahead("s", batch)
    monkeypatch.setattr(prepare_module, "MAX_AGE", 0.0)
    time.sleep(0.01)
    assert preparer.pending("s") is None  # too old to trust its stored attachments

    # The worker, sharing the CPU, ran over the time budget on the second mail.
    late = prepare_one(batch[1], preparer.config, preparer.blobs)
    late.stop("quarantined", "took 21.0 s, over message_time_budget (20 s), in step 'parse'")
    chunk: Future[list[Prepared]] = Future()
    chunk.set_result([prepare_one(batch[0], preparer.config, preparer.blobs), late])
    assert preparer._pool is not None
    done = preparer.take(_ReadAhead(preparer._pool, time.monotonic(), batch, [chunk]), batch)
    assert [p.outcome for p in done] == ["pending", "pending"]
    assert preparer.taken_aside == 1


def test_a_worker_that_cannot_start_costs_no_mail(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoProcesses(ProcessPoolExecutor):
        def submit(self, *args: Any, **kwargs: Any) -> Any:
            raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(prepare_module, "ProcessPoolExecutor", NoProcesses)
    app = make_app("[intake]\nbatch_size = 4\nprepare_aside = true\n")
    for i in range(14):
        deliver_to_maildir(app.config.mailboxes[0].path, complaint(i), name=f"{i:04d}.eml")
    app.run_once()
    assert len(cases_by_message(app)) == 14
    preparer = app.intake.preparer
    assert preparer._failures == MAX_FAILURES and not preparer.aside  # off after three


def test_intake_never_waits_for_the_worker_to_start(
    preparer: Preparer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Starting the worker waits for the fork server's imports (a second, the first time):
    that wait is the start's own, and the batch read ahead meanwhile is handed over when the
    worker has started."""

    start = children.start

    def slow_server() -> None:
        time.sleep(2)  # a fork server still importing
        start()

    monkeypatch.setattr(prepare_module.children, "start", slow_server)
    batch = items(*(complaint(i) for i in range(4)))
    t0 = time.monotonic()
    preparer.ahead("s", batch)
    assert time.monotonic() - t0 < 0.5  # not waited for
    assert preparer._ahead["s"].chunks == []  # the worker is still being started
    preparer.warm()  # up now, and handed the batch as it started
    for chunk in preparer._ahead["s"].chunks:
        chunk.result()
    assert len(preparer.take(preparer.pending("s"), batch)) == 4
    assert preparer.taken_aside == 4


def test_a_child_has_its_parents_environment_of_the_moment_it_starts(
    preparer: Preparer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fork server's environment is the one of when it started; a child is given its
    parent's (an SMTP password_env set since, say), as a spawned child had it."""
    children.start()
    monkeypatch.setenv("CASELOOP_PROBE", "set after the fork server started")
    preparer.warm()
    assert preparer._pool is not None
    probe = preparer._pool.submit(os.getenv, "CASELOOP_PROBE").result(timeout=30)
    assert probe == "set after the fork server started"


def test_a_module_named_in_the_working_folder_does_not_shadow_the_childrens(
    tmp_path: Path,
) -> None:
    """The fork server is a `python -c`: with the working folder first on its path, an
    `email.py` in the folder `caseloop` is run from (a cron user's home) was imported in place
    of the standard library's, and every worker and delivery process failed."""
    config = write_config(tmp_path, "[intake]\nbatch_size = 10\nprepare_aside = true\n")
    inbox = tmp_path / "caseloop-data" / "inbox"
    for i in range(60):
        deliver_to_maildir(inbox, complaint(i), name=f"{i:04d}.eml")
    home = tmp_path / "home"
    home.mkdir()
    marker = home / "shadow-ran"
    (home / "email.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError\n")
    caseloop = Path(sys.executable).parent / "caseloop"  # the installed command, as cron runs it
    argv = [str(caseloop), "--config", str(config), "--log-level", "WARNING", "run", "--once"]
    done = subprocess.run(
        argv, env=caseloop_env(), cwd=home, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not marker.exists()
    assert "prepare.aside_failed" not in done.stderr, done.stderr[-3000:]
    assert len(list((tmp_path / "caseloop-data" / "outbox" / "new").iterdir())) == 60


def test_a_parsed_mail_pickles_whole() -> None:
    parsed = parse_message(complaint(7))
    again = pickle.loads(pickle.dumps(parsed))
    assert again == parsed
    assert again.headers["subject"] == "投诉 水壶漏水，烫伤了手 7"
    with pytest.raises(TypeError):
        again.headers["subject"] = "x"  # type: ignore[index]  # still a read-only view


def test_the_worker_ends_when_intake_is_killed(tmp_path: Path) -> None:
    config = write_config(tmp_path, "[intake]\nbatch_size = 20\nprepare_aside = true\n")
    inbox = tmp_path / "caseloop-data" / "inbox"
    for i in range(3000):
        deliver_to_maildir(inbox, complaint(i), name=f"{i:05d}.eml")
    argv = [sys.executable, "-m", "daemon", "--config", str(config), "run", "--once"]
    proc = subprocess.Popen(argv, env=caseloop_env(), cwd=REPO, stderr=subprocess.DEVNULL)
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(list((inbox / "cur").iterdir())) < 200 and time.monotonic() < deadline:
            children |= _children(proc.pid)
            time.sleep(0.05)
        children |= _children(proc.pid)
        assert proc.poll() is None, "run --once ended before it could be killed"
        # the fork server, the worker it forked, and multiprocessing's resource tracker
        assert len(children) >= 3, children
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 20
    while (alive := {pid for pid in children if _alive(pid)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in alive:  # ended by the test that started them, by PID
        os.kill(pid, signal.SIGKILL)
    assert alive == set()


def _children(pid: int) -> set[int]:
    """Every descendant of pid (the worker is a child of the fork server, not of intake)."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    kids = {int(p) for p in found.split()}
    return kids.union(*(_children(kid) for kid in kids))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_the_read_ahead_of_cases_opened_keeps_to_the_address_index(tmp_path: Path) -> None:
    """Fifty addresses and a creation-time range: SQLite's planner took the range (all of
    the day's cases, per query) until the time went through a function."""
    config = configmod.load(write_config(tmp_path))
    App(config).close()  # the schema
    engine = create_engine(config.database_url)
    with engine.connect() as conn:
        compiled = _READ_OPENED.statement.compile(dialect=conn.dialect)
        params = [f"p{n}" for n in range(len(compiled.positiontup or []))]
        plan = " ".join(
            str(row[-1])
            for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), tuple(params))
        )
    engine.dispose()
    assert "ix_tickets_complainant_email" in plan
    assert "ix_tickets_created_at" not in plan
