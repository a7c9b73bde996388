"""The store's write API (daemon/store/writes.py) writes and reads the same rows on every database.

The parity test runs one script of writes and look-ups through the API on SQLite and on
PostgreSQL and compares every column of every row read back, and every answer the look-ups
gave; rows the API writes also equal the rows the ORM writes from the same values.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from daemon.app import App
from daemon.store import writes
from daemon.store.db import make_engine, migrate, session_factory
from daemon.store.models import (
    Attachment,
    Base,
    DigestRun,
    OutboxMessage,
    SourceItem,
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
        answers["complainants"] = sorted(
            writes.complainants(session, "恒盛", AT - timedelta(days=7), AT, 10)
        )
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
    assert answers["sqlite"]["complainants"] == ["a@example.cn", "b@example.cn"]
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
