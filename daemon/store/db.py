"""Engines, sessions and migrations for SQLite (embedded) and PostgreSQL (scale-out)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, Table, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from daemon.resources import shipped_dir
from daemon.store.fastpath import FastStatement
from daemon.store.models import Base


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine with the settings each backend needs to be safe under concurrent writers."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy emit BEGIN itself so savepoints and IMMEDIATE locking work.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA cache_size=-16384")  # 16 MiB: a batch's pages stay in memory
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Writers take the write lock up front (no deadlock-prone read->write upgrades);
            # readers (read_only sessions) do not wait for it: WAL lets them read meanwhile.
            options = conn.get_execution_options()
            if options.get("read_only", False):
                conn.exec_driver_sql("BEGIN")
            elif options.get("nowait", False):  # take the write lock now or fail at once
                conn.exec_driver_sql("PRAGMA busy_timeout=0")
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                finally:
                    conn.exec_driver_sql("PRAGMA busy_timeout=30000")
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def insert_row(session: Session, model: type[Base], **values: Any) -> int:
    """INSERT one row straight through Core and return its id.

    The intake hot path writes rows it never reads back this way: about a fifth of the cost of
    the ORM unit of work. Every column without a server default must be given.
    """
    table = cast(Table, model.__table__)
    statement = _INSERTS.get(table)
    if statement is None:
        statement = _INSERTS[table] = FastStatement(table.insert().returning(table.c.id))
    return int(statement.scalar(session.connection(), values))


_INSERTS: dict[Table, FastStatement] = {}  # built once per table
_BULK_INSERTS: dict[Table, FastStatement] = {}


def insert_later(session: Session, model: type[Base], **values: Any) -> None:
    """INSERT a row nothing reads back in this transaction; batched when a batch is open."""
    table = cast(Table, model.__table__)
    statement = _BULK_INSERTS.get(table)
    if statement is None:
        statement = _BULK_INSERTS[table] = FastStatement(table.insert())
    execute_later(session, statement, values)


def execute_later(session: Session, statement: FastStatement, params: dict[str, Any]) -> None:
    """Run a write nothing reads back in this transaction.

    Inside `deferred_writes` the writes run together when the block ends, one executemany per
    statement and set of parameters; elsewhere at once.
    """
    pending = session.info.get(_DEFERRED)
    if pending is None:
        statement.first(session.connection(), params)
    else:
        pending.append((statement, params))


@contextmanager
def deferred_writes(session: Session) -> Iterator[list[tuple[FastStatement, dict[str, Any]]]]:
    """Collect execute_later writes for the block; run them at its end (not if it raises).

    Yields the pending list: a caller that rolls back a savepoint truncates it to the length
    it had when the savepoint began.
    """
    pending: list[tuple[FastStatement, dict[str, Any]]] = []
    session.info[_DEFERRED] = pending
    try:
        yield pending
    finally:
        del session.info[_DEFERRED]
    groups: dict[tuple[FastStatement, tuple[str, ...]], list[dict[str, Any]]] = {}
    for statement, params in pending:  # in order of first appearance, one executemany each
        groups.setdefault((statement, tuple(params)), []).append(params)
    conn = session.connection()
    for (statement, _names), rows in groups.items():
        statement.executemany(conn, rows)


_DEFERRED = "caseloop.deferred_writes"


def scalar(session: Session, statement: FastStatement, params: dict[str, Any]) -> Any:
    """A one-value statement on the session's connection, after flushing pending ORM changes.

    Cheaper than Session.scalar on the hot path; rows written with insert_row are visible.
    """
    session.flush()
    return statement.scalar(session.connection(), params)


def session_factory(
    engine: Engine, *, read_only: bool = False, nowait: bool = False
) -> sessionmaker[Session]:
    """Sessions on the engine. On SQLite, read_only ones never block (nor wait for) a writer;
    nowait ones raise OperationalError at once instead of waiting for the write lock."""
    bind = engine.execution_options(read_only=read_only, nowait=nowait)
    return sessionmaker(bind, expire_on_commit=False)


def _alembic_config(engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(shipped_dir("migrations")))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest migration."""
    command.upgrade(_alembic_config(engine), "head")


def needs_migration(engine: Engine) -> bool:
    script = ScriptDirectory.from_config(_alembic_config(engine))
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_heads()
    return set(current) != set(script.get_heads())
