"""Engines, sessions and migrations for SQLite (embedded) and PostgreSQL (scale-out)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, make_url
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from daemon.resources import shipped_dir
from daemon.store import deferred

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

# The newest migration (migrations/versions/). Starting on a database already at it needs no
# alembic, whose import (with mako's) was a third of every command's start-up; alembic is
# imported only to migrate or to report. tests/test_migrations.py pins this to alembic's head.
SCHEMA_HEAD = "0005"


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
                _begin_polling(conn, 0.0)
            elif options.get("eager", False):
                _begin_polling(conn, EAGER_WAIT)
            else:
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    engine = create_engine(url, pool_pre_ping=True, **kwargs)
    deferred.install(engine)  # the write API's writes go in one round trip (deferred.py)
    return engine


def _begin_polling(conn: Any, wait: float) -> None:
    """BEGIN IMMEDIATE, asked again every EAGER_POLL seconds for `wait` seconds while another
    writer holds the lock (0: once). SQLite's own wait sleeps up to 100 ms between tries, so a
    writer queued behind intake's back-to-back batches (a few hundred ms each) kept missing the
    short gaps between them: delivery in run --once fell behind intake."""
    deadline = time.monotonic() + wait
    conn.exec_driver_sql("PRAGMA busy_timeout=0")
    while True:
        try:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            break
        except OperationalError as exc:
            if "locked" in str(exc) and time.monotonic() < deadline:
                time.sleep(EAGER_POLL)
                continue
            with contextlib.suppress(SQLAlchemyError):  # the error above is the one to see
                conn.exec_driver_sql("PRAGMA busy_timeout=30000")
            raise
    conn.exec_driver_sql("PRAGMA busy_timeout=30000")


EAGER_POLL = 0.002
EAGER_WAIT = 30.0  # as long as SQLite's own wait (busy_timeout)


def session_factory(
    engine: Engine, *, read_only: bool = False, nowait: bool = False, eager: bool = False
) -> sessionmaker[Session]:
    """Sessions on the engine. On SQLite, read_only ones never block (nor wait for) a writer;
    nowait ones raise OperationalError at once instead of waiting for the write lock; eager
    ones wait for it asking every few ms (_begin_polling) rather than SQLite's way."""
    bind = engine.execution_options(read_only=read_only, nowait=nowait, eager=eager)
    return sessionmaker(bind, expire_on_commit=False)


def _alembic_config(engine: Engine) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(shipped_dir("migrations")))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest migration."""
    from alembic import command

    command.upgrade(_alembic_config(engine), "head")


def needs_migration(engine: Engine) -> bool:
    """Whether the schema is anything but SCHEMA_HEAD (no schema yet, an older one)."""
    return schema_versions(engine) != {SCHEMA_HEAD}


def schema_versions(engine: Engine) -> set[str]:
    """The migrations the database is at (alembic's version table); none: no schema yet."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return set()  # an empty database
        return {str(v) for (v,) in conn.exec_driver_sql("select version_num from alembic_version")}


def schema_heads(engine: Engine) -> set[str]:
    """The newest migrations shipped (alembic's own reading of migrations/versions/)."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(_alembic_config(engine)).get_heads())


class InstanceRunning(Exception):
    """Another caseloop instance runs on this SQLite database (SQLite is single-instance)."""


class InstanceLock:
    """The embedded SQLite database is worked by one instance at a time: an exclusive lock
    on a file beside it, held while the instance runs and freed by the kernel when its
    process ends, however it ends (no stale lock after a crash)."""

    def __init__(self, handle: IO[str], path: Path) -> None:
        self._handle, self.path = handle, path

    @classmethod
    def take(cls, database: str | None) -> InstanceLock | None:
        """Lock the database file `database` (a path), or raise InstanceRunning naming the
        process that holds it; None for an in-memory database."""
        if not database or database == ":memory:":
            return None
        path = Path(f"{database}.instance-lock")
        handle = path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise InstanceRunning(
                f"another caseloop instance ({holder}) is running on {database}: the embedded "
                "SQLite database takes one instance; stop it first, or use PostgreSQL "
                "([database] url) to run several"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        return cls(handle, path)

    def release(self) -> None:
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


def check_database(url: str) -> str:
    """What check-config reports for the database: reachable, its version, and whether the
    schema is at head. Creates nothing: an embedded SQLite file not made yet is reported."""
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:" and not Path(path).exists():
            return f"ok, {path} does not exist yet: the first `caseloop run` creates it"
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                version = f"SQLite {conn.exec_driver_sql('select sqlite_version()').scalar()}"
            else:
                version = f"PostgreSQL {conn.exec_driver_sql('show server_version').scalar()}"
        current = schema_versions(engine)
        heads = schema_heads(engine)
    except SQLAlchemyError as exc:
        return f"FAILED: cannot read the database: {getattr(exc, 'orig', None) or exc}"
    finally:
        engine.dispose()
    if current == heads:
        return f"ok, {version}, schema at head ({', '.join(sorted(heads))})"
    at = ", ".join(sorted(current)) or "empty"
    if url.startswith("sqlite"):  # the embedded default migrates itself on start
        return f"ok, {version}, schema at {at}: `caseloop run` upgrades it to {', '.join(heads)}"
    return f"FAILED: {version}, schema at {at}, head is {', '.join(heads)}: run `caseloop migrate`"
