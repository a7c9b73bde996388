"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import subprocess
import sys

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from daemon.store.db import SCHEMA_HEAD, make_engine, migrate, needs_migration, schema_heads
from daemon.store.models import Base


def test_migrations_match_the_models(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert needs_migration(engine)
        migrate(engine)
        assert not needs_migration(engine)
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        tables = set(inspect(engine).get_table_names())
        assert {
            "tickets",
            "timeline_entries",
            "attachments",
            "outbox",
            "source_items",
            "ticket_counters",
            "source_state",
            "alembic_version",
        } <= tables
        migrate(engine)  # running it again is harmless
    finally:
        engine.dispose()


def test_schema_head_is_the_newest_migration(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A start compares the database with SCHEMA_HEAD without importing alembic: a migration
    # added without moving SCHEMA_HEAD would never be applied by the embedded default.
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        assert schema_heads(engine) == {SCHEMA_HEAD}
        migrate(engine)
        with engine.begin() as conn:  # a database a migration behind
            conn.exec_driver_sql("update alembic_version set version_num = '0004'")
        assert needs_migration(engine)
    finally:
        engine.dispose()


def test_commands_start_without_alembic() -> None:
    # alembic (and mako, and pygments where installed) cost a third of a command's start-up:
    # only migrating and check-config import it.
    code = "import sys, daemon.cli; print(sorted({'alembic', 'mako'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_0003_gives_sqlite_whole_second_times_the_form_core_writes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from alembic import command
    from sqlalchemy import select, text

    from daemon.store.db import _alembic_config
    from daemon.store.models import SourceItem

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        command.upgrade(_alembic_config(engine), "0002")
        with engine.begin() as conn:  # as the fast path wrote it before 0003
            conn.execute(text("INSERT INTO source_items (source, key, outcome, at) "
                              "VALUES ('s', 'k', 'ticket', '2026-11-24 02:00:00')"))  # fmt: skip
        migrate(engine)
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT at FROM source_items")).scalar_one()
            at = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
            found = conn.execute(select(SourceItem.key).where(SourceItem.at == at)).all()
        assert stored == "2026-11-24 02:00:00.000000" and found == [("k",)]
    finally:
        engine.dispose()
