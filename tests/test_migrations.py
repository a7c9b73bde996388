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
