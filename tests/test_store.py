"""The store's write API (daemon/store/writes.py) writes and reads the same rows on every database.

The parity test runs one script of writes and look-ups through the API on SQLite and on
PostgreSQL and compares every column of every row read back, and every answer the look-ups
gave; rows the API writes also equal the rows the ORM writes from the same values.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError

from daemon.app import App
from daemon.maildirs import deliver_to_maildir
from daemon.store import writes
from daemon.store.db import make_engine, migrate, session_factory
from daemon.store.models import (
    Attachment,
    Base,
    DigestRun,
    OutboxMessage,
    SourceItem,
    SourceState,
    Ticket,
    TicketCounter,
    TimelineEntry,
)

AT = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # a whole second: see the last test
LATER = AT + timedelta(minutes=5, microseconds=250)
TABLES: list[type[Base]] = [
    Ticket, TimelineEntry, Attachment, OutboxMessage, SourceItem, TicketCounter, DigestRun
]  # fmt: skip


def _case(number: str, email: str) -> dict[str, Any]:
    """The columns intake gives; category, priority, extra and the counts are left to the
    model's defaults (an INSERT that leaves them out must store them on every database)."""
    return dict(number=number, status="received", channel="email", language="zh-CN",
                subject="电水壶漏水", complainant_email=email, respondent="恒盛 Ltd",
                respondent_key="恒盛", source="inbox", reply_token=f"t{number[-4:]}",
                created_at=AT, updated_at=AT)  # fmt: skip


def _script(engine: Engine) -> dict[str, Any]:
    """Every operation of the write API once (some twice); what each answered."""
    answers: dict[str, Any] = {}
    sessions = session_factory(engine)
    with sessions.begin() as session:
        answers["counter"] = [writes.bump_counter(session, "TS", date(2026, 11, 24)) for _ in "ab"]
        first = writes.open_case(session, **_case("TS-20261124-0001", "a@example.cn"))
        second = writes.open_case(session, **_case("TS-20261124-0002", "B@example.cn"))
        entry = writes.add_entry(
            session, ticket_id=first, at=AT, kind="message_in", actor="a@example.cn",
            direction="in", message_id="<in-1@example.cn>", subject="主题", text="文本\n第二行",
            raw_sha256="ab" * 32, internal=False, data={"registration_filled": {"phone": "139"}},
        )  # fmt: skip
        writes.add_attachment(session, entry_id=entry, filename="发票.pdf",
                              content_type="application/pdf", size=3, sha256="cd" * 32)  # fmt: skip
        writes.queue_outbox(
            session, ticket_id=first, kind="ack", intent="ack:TS-20261124-0001",
            recipient="a@example.cn", message_id="<out-1@support.example>", subject="[TS] 受理",
            raw=b"\x00\xffraw", created_at=LATER, next_attempt_at=LATER,
        )  # fmt: skip
        writes.update_case(session, first, acknowledged_at=LATER, updated_at=LATER)
        writes.record_items(session, [
            dict(source="inbox", key="k1", outcome="ticket", reason=None, ticket_id=first,
                 raw_sha256="ab" * 32, raw=b"From: a\r\n", at=AT),
            dict(source="inbox", key="k2", outcome="quarantined", reason="empty input",
                 ticket_id=None, raw_sha256=None, raw=None, at=LATER),
        ])  # fmt: skip
        answers["slot"] = [
            writes.insert_if_absent(
                session, DigestRun, ("slot",), slot=AT, at=LATER, sent=0, data={"overdue": 1}
            )  # fmt: skip
            for _ in "ab"
        ]
        answers["case_of_message"] = [
            writes.case_of_message(session, "<in-1@example.cn>"),
            writes.case_of_message(session, "<nobody@example.cn>"),
        ]
        answers["intent_taken"] = [
            writes.intent_taken(session, "ack:TS-20261124-0001"),
            writes.intent_taken(session, "ack:TS-20261124-0002"),
        ]
        answers["automatic"] = [
            writes.automatic_mail_count(session, "a@example.cn", AT),
            writes.automatic_mail_count(session, "a@example.cn", LATER),
        ]
        answers["recent_cases"] = [
            (number, email)
            for _id, number, email, _gist, _group in writes.recent_cases(
                session, "恒盛", AT - timedelta(days=7), AT, 10
            )
        ]
        answers["outbox"] = writes.outbox_of_message(session, "<out-1@support.example>")
        answers["ids"] = [first, second, entry]
    return answers


def _rows(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every column of every row of the tables the API writes, in key order."""
    found: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as conn:
        for model in TABLES:
            table = model.__table__
            order = list(table.primary_key.columns)  # type: ignore[attr-defined]
            rows = conn.execute(select(table).order_by(*order)).mappings().all()  # type: ignore[arg-type]
            found[table.name] = [dict(row) for row in rows]  # type: ignore[attr-defined]
    return found


def _engine(url: str) -> Engine:
    engine = make_engine(url)
    migrate(engine)
    return engine


def test_the_write_api_gives_the_same_rows_and_answers_on_sqlite_and_postgresql(
    tmp_path: Path, pg_schema_url: str
) -> None:
    lite = _engine(f"sqlite:///{tmp_path / 'parity.db'}")
    pg = _engine(pg_schema_url)
    try:
        answers = {name: _script(engine) for name, engine in (("sqlite", lite), ("pg", pg))}
        rows = {name: _rows(engine) for name, engine in (("sqlite", lite), ("pg", pg))}
    finally:
        lite.dispose()
        pg.dispose()

    assert answers["sqlite"] == answers["pg"]
    assert answers["sqlite"]["counter"] == [1, 2]
    assert answers["sqlite"]["slot"][1] is None  # taken once
    assert answers["sqlite"]["case_of_message"][1] is None
    assert answers["sqlite"]["intent_taken"] == [True, False]
    assert answers["sqlite"]["automatic"] == [1, 0]
    assert answers["sqlite"]["recent_cases"] == [  # newest first
        ("TS-20261124-0002", "B@example.cn"),
        ("TS-20261124-0001", "a@example.cn"),
    ]
    for table, lite_rows in rows["sqlite"].items():
        assert lite_rows, f"{table}: the script wrote no row"
        assert lite_rows == rows["pg"][table], f"{table} differs between the databases"
    # What an INSERT left out is the model's default, on both databases.
    case = rows["sqlite"]["tickets"][0]
    assert (case["category"], case["priority"], case["extra"]) == ("other", "normal", {})
    assert (case["escalation_level"], case["reopened_count"], case["needs_review"]) == (0, 0, False)
    assert case["acknowledged_at"] == LATER and case["created_at"].tzinfo is not None
    outbox = rows["sqlite"]["outbox"][0]
    assert (outbox["status"], outbox["automatic"], outbox["attempts"]) == ("queued", True, 0)
    assert outbox["raw"] == b"\x00\xffraw"


def test_rows_written_through_the_api_equal_rows_the_orm_writes(make_app) -> None:
    app: App = make_app()
    with app.sessions.begin() as session:
        api = writes.open_case(session, **_case("TS-20261124-0001", "a@example.cn"))
        orm = Ticket(**_case("TS-20261124-0002", "a@example.cn"))
        session.add(orm)
        session.flush()
        orm_id = orm.id
    with app.engine.connect() as conn:
        table = Ticket.__table__
        by_id = {row["id"]: dict(row) for row in conn.execute(select(table)).mappings()}
    differ = {"id", "number", "reply_token"}
    one = {k: v for k, v in by_id[api].items() if k not in differ}
    two = {k: v for k, v in by_id[orm_id].items() if k not in differ}
    assert one == two


def test_api_reads_see_orm_writes_before_them_in_the_transaction(make_app) -> None:
    # One write order: a row added with session.add is written before the next API statement.
    app: App = make_app()
    with app.sessions.begin() as session:
        case = writes.open_case(session, **_case("TS-20261124-0001", "a@example.cn"))
        session.add(TimelineEntry(ticket_id=case, at=AT, kind="message_out", actor="us",
                                  message_id="<orm@x>", internal=False, data={}))  # fmt: skip
        assert writes.case_of_message(session, "<orm@x>") == case
        session.add(OutboxMessage(ticket_id=case, kind="ack", intent="orm", recipient="a@x",
                                  message_id="<orm-out@x>", subject="s", raw=b"", created_at=AT,
                                  next_attempt_at=AT))  # fmt: skip
        assert writes.intent_taken(session, "orm")


def test_a_broken_constraint_raises_sqlalchemys_error_on_every_database(make_app) -> None:
    # Callers catch one kind of error whichever path wrote: not sqlite3's or psycopg's own.
    app: App = make_app()
    outbox = dict(ticket_id=None, kind="digest", intent="once", recipient="s@x", subject="s",
                  message_id="<m@x>", raw=b"", created_at=AT, next_attempt_at=AT)  # fmt: skip
    with app.sessions.begin() as session:
        writes.queue_outbox(session, **outbox)
        savepoint = session.begin_nested()
        with pytest.raises(IntegrityError):
            writes.queue_outbox(session, **outbox)
            # At the latest when the savepoint commits (PostgreSQL holds the INSERT until then),
            # so the savepoint can still be rolled back: the intake's isolation of one item.
            savepoint.commit()
        savepoint.rollback()
        assert writes.intent_taken(session, "once")  # the first row stays


def test_times_written_through_the_api_compare_like_orm_times(make_app) -> None:
    # A whole-second time is where SQLite's own datetime adapter and SQLAlchemy's formatting
    # differ ("...:00" vs "...:00.000000"); stored as text, they would not compare equal.
    app: App = make_app()
    with app.sessions.begin() as session:
        writes.record_items(session, [dict(source="s", key="fast", outcome="ticket", at=AT)])
        session.add(SourceItem(source="s", key="core", outcome="ticket", at=AT))
    with app.sessions() as session:

        def count(*where: object) -> int:
            return int(session.scalar(select(func.count()).where(*where)) or 0)  # type: ignore[arg-type]

        assert count(SourceItem.at == AT) == 2
        assert count(SourceItem.at >= AT) == 2
        assert count(SourceItem.at > AT) == 0
        assert session.scalars(select(SourceItem.at)).all() == [AT, AT]


# -- what the write API holds back and reads ahead (PostgreSQL holds, both read ahead) -----------


def _entry(case: int, message_id: str | None, kind: str = "message_in") -> dict[str, Any]:
    return dict(ticket_id=case, at=AT, kind=kind, actor="a@example.cn", message_id=message_id,
                internal=False, data={})  # fmt: skip


def _mail(case: int | None, intent: str, recipient: str) -> dict[str, Any]:
    return dict(ticket_id=case, kind="ack", intent=intent, recipient=recipient, subject="s",
                message_id=f"<{intent}@support.example>", raw=b"", created_at=LATER,
                next_attempt_at=LATER)  # fmt: skip


def test_one_cases_rows_keep_the_order_they_were_asked_for(make_app) -> None:
    # An ORM row not flushed yet and an API row of the same case: the ORM row goes first, so
    # the case's timeline (ordered by id within one moment) reads as it happened.
    app: App = make_app()
    with app.sessions.begin() as session:
        case = writes.open_case(session, **_case("TS-20261124-0001", "a@example.cn"))
        other = writes.open_case(session, **_case("TS-20261124-0002", "b@example.cn"))
        session.add(TimelineEntry(**_entry(case, None, "status")))
        writes.add_entry(session, **_entry(other, "<other@x>"))  # another case: need not wait
        writes.add_entry(session, **_entry(case, "<out@x>", "message_out"))
    with app.sessions() as session:
        kinds = session.scalars(
            select(TimelineEntry.kind)
            .where(TimelineEntry.ticket_id == case)
            .order_by(TimelineEntry.id)
        ).all()
    assert kinds == ["status", "message_out"]


def test_a_rolled_back_case_number_goes_to_the_next_case(make_app) -> None:
    # On PostgreSQL numbers come from blocks reserved outside the transaction: a rollback gives
    # them back, and what a block has left over goes back to the counter at commit.
    app: App = make_app()
    day = date(2026, 11, 24)
    with app.sessions.begin() as session:
        assert writes.bump_counter(session, "TS", day) == 1
        savepoint = session.begin_nested()
        assert writes.bump_counter(session, "TS", day) == 2
        savepoint.rollback()
        assert writes.bump_counter(session, "TS", day) == 2
    with pytest.raises(RuntimeError), app.sessions.begin() as session:
        assert writes.bump_counter(session, "TS", day) == 3
        raise RuntimeError("rolled back")
    with app.sessions.begin() as session:
        assert [writes.bump_counter(session, "TS", day) for _ in "abc"] == [3, 4, 5]
    with app.sessions.begin() as session:
        assert writes.bump_counter(session, "TS", day) == 6
    with app.sessions() as session:
        assert session.scalar(select(TicketCounter.value)) == 6


def test_look_ups_after_expect_answer_as_the_database_would(make_app) -> None:
    app: App = make_app()
    with app.sessions.begin() as session:
        old = writes.open_case(session, **_case("TS-20261124-0001", "a@example.cn"))
        writes.add_entry(session, **_entry(old, "<old@x>"))
        writes.queue_outbox(session, **_mail(old, "ack:1", "a@example.cn"))
    with app.sessions.begin() as session:
        writes.expect(session, LATER, ["<old@x>", "<new@x>", "<orm@x>"], ["a@example.cn", "b@x"])
        assert writes.case_of_message(session, "<old@x>") == old
        assert writes.case_of_message(session, "<new@x>") is None
        new = writes.open_case(session, **_case("TS-20261124-0002", "b@x"))
        writes.add_entry(session, **_entry(new, "<new@x>"))
        assert writes.case_of_message(session, "<new@x>") == new  # this transaction's own
        session.add(TimelineEntry(**_entry(new, "<orm@x>", "note")))
        assert writes.case_of_message(session, "<orm@x>") == new  # an ORM row not flushed yet
        assert writes.automatic_mail_count(session, "a@example.cn", AT) == 1
        assert writes.automatic_mail_count(session, "a@example.cn", LATER) == 0
        writes.queue_outbox(session, **_mail(new, "ack:2", "b@x"))
        assert writes.automatic_mail_count(session, "b@x", AT) == 1
        session.add(OutboxMessage(**_mail(new, "orm", "b@x")))
        assert writes.automatic_mail_count(session, "b@x", AT) == 2
        # Any other write through the session: the read-ahead is dropped, the database asked.
        session.execute(update(OutboxMessage).values(automatic=False))
        assert writes.automatic_mail_count(session, "a@example.cn", AT) == 0


def test_cases_opened_by_after_expect_answers_as_the_database_would(make_app) -> None:
    # The daily cap on cases a mailbox opens: read ahead for the batch's senders, then kept
    # up to date with the cases the batch opens; sub-addresses are the same mailbox, another
    # domain or a longer local part is not.
    app: App = make_app()
    senders = ["a@example.cn", "a+shop@example.cn", "ab@example.cn", "a@other.cn"]
    with app.sessions.begin() as session:
        for i, email in enumerate(senders * 2):
            case = _case(f"TS-20261124-{i + 1:04d}", email)
            writes.open_case(session, **{**case, "created_at": AT + timedelta(minutes=i)})

    def asked(session: Any) -> list[tuple[int, int | None]]:
        asks = ("a@example.cn", "A+x@Example.cn", "ab@example.cn", "z@example.cn")
        since = (AT - timedelta(hours=1), AT + timedelta(minutes=3))
        return [writes.cases_opened_by(session, a, s) for a in asks for s in since]

    with app.sessions.begin() as session:
        plain = asked(session)
    assert plain[0][0] == 4 and plain[1][0] == 2 and plain[6] == (0, None)
    with app.sessions.begin() as session:
        writes.expect(session, LATER, [], ["a@example.cn", "ab@example.cn", "z@example.cn"])
        assert asked(session) == plain
        new = writes.open_case(session, **{**_case("TS-20261124-0099", "a+x@example.cn"),
                                           "created_at": LATER})  # fmt: skip
        assert writes.cases_opened_by(session, "a@example.cn", AT) == (4, new)
        assert writes.cases_opened_by(session, "ab@example.cn", AT) == (2, plain[4][1])
    with app.sessions.begin() as session:  # and the database agrees
        assert writes.cases_opened_by(session, "a@example.cn", AT) == (4, new)


def test_a_conflict_found_with_the_batchs_last_writes_sets_one_mail_aside(
    make_app, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL sends a batch's writes together, at the latest with its source_items rows. A
    # conflict found only there (another instance took a Message-ID in after this batch read
    # ahead) is still one mail's: the batch is redone mail by mail, that one is a duplicate.
    app: App = make_app()
    if app.engine.dialect.name == "sqlite":
        pytest.skip("SQLite has one writer: nothing commits while a batch is being decided")
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    raws = [_complaint(i) for i in range(3)]
    for i, raw in enumerate(raws):
        deliver_to_maildir(inbox, raw, name=f"m{i}")
    real, raced = writes.expect, []

    def expect_then_another_instance_commits(session: Any, *args: Any) -> None:
        real(session, *args)
        if raced:
            return
        with app.sessions.begin() as other:  # the same mail 2, taken in by another instance
            case = writes.open_case(other, **_case("TS-20991231-0001", "x@example.cn"))
            entry = _entry(case, "<mail-2@example.net>")
            writes.add_entry(other, **entry, raw_sha256=hashlib.sha256(raws[2]).hexdigest())
        raced.append(case)

    monkeypatch.setattr(writes, "expect", expect_then_another_instance_commits)
    summary = app.run_once()
    assert (summary.outcomes["ticket"], summary.outcomes["duplicate"]) == (2, 1)
    assert not summary.set_aside
    with app.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 3  # 2 + the racer's
        assert session.scalar(select(func.count()).select_from(SourceItem)) == 3
        # ... in the batch that raced: never a source error (a retry would also end well)
        assert session.scalar(select(SourceState.last_error)) is None


def _complaint(i: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"consumer{i}@example.net"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Broken kettle"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<mail-{i}@example.net>"
    msg.set_content(f"My kettle leaks (order 2026{i:08d}). I want a refund.")
    return msg.as_bytes()


def test_an_eager_writer_waits_for_the_lock_and_gives_up_at_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Delivery beside intake (SQLite) asks for the write lock every few ms instead of
    SQLite's sleeps of up to 100 ms: it gets the lock once the other writer lets go, and gives
    up as a plain writer would when it never does."""
    import sqlite3
    import threading
    import time

    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from daemon.store import db

    path = tmp_path / "eager.db"
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    eager = session_factory(engine, eager=True)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, other.execute, args=("COMMIT",)).start()
    started = time.monotonic()
    with eager.begin() as session:
        session.execute(text("INSERT INTO t VALUES (1)"))
    assert time.monotonic() - started >= 0.25  # it waited for the other writer

    monkeypatch.setattr(db, "EAGER_WAIT", 0.2)
    other.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError, match="locked"), eager.begin() as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
        assert time.monotonic() - started < 5  # its own limit, not SQLite's 30 s
    finally:
        other.execute("ROLLBACK")
        other.close()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT x FROM t")).scalars().all() == [1]
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000  # put back
    engine.dispose()
