"""The intake's fast path (daemon/store/fastpath.py) writes the rows Core would write."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select

from daemon.store.db import insert_row
from daemon.store.models import SourceItem


def test_fast_path_rows_compare_like_core_rows(make_app) -> None:
    # A whole-second time is where SQLite's own datetime adapter and SQLAlchemy's formatting
    # differ ("...:00" vs "...:00.000000"); stored as text, they would not compare equal.
    app = make_app()
    at = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    with app.sessions.begin() as session:
        insert_row(session, SourceItem, source="s", key="fast", outcome="ticket", at=at,
                   ticket_id=None, reason=None, raw_sha256=None, raw=None)  # fmt: skip
        session.add(SourceItem(source="s", key="core", outcome="ticket", at=at))
    with app.sessions() as session:

        def count(*where: object) -> int:
            return int(session.scalar(select(func.count()).where(*where)) or 0)  # type: ignore[arg-type]

        assert count(SourceItem.at == at) == 2
        assert count(SourceItem.at >= at) == 2
        assert count(SourceItem.at > at) == 0
        assert session.scalars(select(SourceItem.at)).all() == [at, at]
