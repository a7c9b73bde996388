"""Case numbers: PREFIX-YYYYMMDD-NNNN by local date, unique under concurrent writers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import IntegrityError

from daemon.app import App
from daemon.store.models import Ticket
from handlers.intake import next_number


def test_number_uses_the_local_date_not_utc(make_app) -> None:
    app: App = make_app()
    # 2026-11-24 17:30 UTC is already 25 November in Shanghai.
    late = datetime(2026, 11, 24, 17, 30, tzinfo=UTC)
    with app.sessions.begin() as session:
        assert next_number(session, app.config, late) == "TS-20261125-0001"
        assert next_number(session, app.config, late) == "TS-20261125-0002"
        assert next_number(session, app.config, datetime(2026, 11, 24, 2, tzinfo=UTC)) == (
            "TS-20261124-0001"
        )


def test_concurrent_writers_never_share_a_number(make_app) -> None:
    app: App = make_app()
    now = datetime(2026, 11, 24, 2, tzinfo=UTC)

    def take(_: int) -> str:
        with app.sessions.begin() as session:
            return next_number(session, app.config, now)

    with ThreadPoolExecutor(max_workers=8) as pool:
        numbers = list(pool.map(take, range(200)))
    assert len(set(numbers)) == 200
    assert sorted(numbers) == [f"TS-20261124-{i:04d}" for i in range(1, 201)]


def test_the_database_refuses_a_duplicate_number(make_app) -> None:
    app: App = make_app()
    now = datetime(2026, 11, 24, 2, tzinfo=UTC)
    fields = dict(
        status="received",
        channel="email",
        language="en",
        subject="",
        complainant_email="a@example.net",
        source="t",
        created_at=now,
        updated_at=now,
        extra={},
    )
    with pytest.raises(IntegrityError), app.sessions.begin() as session:
        session.add(Ticket(number="TS-20261124-0001", reply_token="a", **fields))
        session.add(Ticket(number="TS-20261124-0001", reply_token="b", **fields))
