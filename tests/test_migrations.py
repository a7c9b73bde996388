"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from daemon.store.db import make_engine, migrate, needs_migration
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
