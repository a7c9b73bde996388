"""Bench: one SLA sweep over 1,000,000 tickets, on SQLite and on PostgreSQL.

    .venv/bin/python bench/sla_sweep.py [--rows 1000000] [--due 200] [--only sqlite|postgresql]

The table is filled in the database itself (a recursive CTE on SQLite, generate_series on
PostgreSQL): 95% closed cases with no due times, the rest open with their next check spread
over the next 30 days, and `--due` of them needing a step now (half at the reminder, half
just past the acceptance deadline). One sweep is timed (it takes those steps), then a second
one with nothing left to do. Target: <= 1 s each. PostgreSQL: 127.0.0.1:5432, database test,
a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daemon import config as configmod  # noqa: E402
from daemon.app import App  # noqa: E402
from daemon.clock import MovableClock  # noqa: E402
from daemon.store.db import make_engine, migrate  # noqa: E402
from handlers import sla  # noqa: E402

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Tuesday 10:00 in Shanghai

COLUMNS = (
    "number, status, channel, category, priority, language, subject, complainant_email, "
    "source, reply_token, created_at, updated_at, escalation_level, reopened_count, "
    "needs_review, extra, assignee, due_first_response, due_acceptance, due_resolution, "
    "sla_next_check_at"
)


def fill_sqlite(conn, rows: int, due: int) -> None:  # noqa: ANN001
    ts = "strftime('%Y-%m-%d %H:%M:%f', '2026-11-24 02:00:00', {} || ' seconds')"
    conn.exec_driver_sql(
        f"""
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
        INSERT INTO tickets ({COLUMNS})
        SELECT 'TS-' || i,
               CASE WHEN i % 20 = 0 THEN 'in_progress' ELSE 'closed' END,
               'email', 'product_quality', 'normal', 'zh-CN', 'subject', 'c' || i || '@ex.org',
               'bench', printf('%016x', i),
               {ts.format("-(i % 31536000)")}, {ts.format("-(i % 31536000)")}, 0, 0, 0, '{{}}',
               'staff' || (i % 100) || '@ex.org',
               NULL,
               NULL,
               CASE WHEN i % 20 = 0 THEN {ts.format("(i % 2592000) + 3600")} END,
               CASE WHEN i % 20 = 0 THEN {ts.format("(i % 2592000) + 60")} END
        FROM n
        """
    )
    _make_due(conn, due, "datetime('2026-11-24 02:00:00', ?)")


def fill_postgresql(conn, rows: int, due: int) -> None:  # noqa: ANN001
    now = "timestamptz '2026-11-24 02:00:00+00'"
    conn.exec_driver_sql(
        f"""
        INSERT INTO tickets ({COLUMNS})
        SELECT 'TS-' || i,
               CASE WHEN i % 20 = 0 THEN 'in_progress' ELSE 'closed' END,
               'email', 'product_quality', 'normal', 'zh-CN', 'subject', 'c' || i || '@ex.org',
               'bench', lpad(to_hex(i), 16, '0'),
               {now} - (i % 31536000) * interval '1 second',
               {now} - (i % 31536000) * interval '1 second', 0, 0, false, '{{}}',
               'staff' || (i % 100) || '@ex.org',
               NULL,
               NULL,
               CASE WHEN i % 20 = 0 THEN {now} + ((i % 2592000) + 3600) * interval '1 second' END,
               CASE WHEN i % 20 = 0 THEN {now} + ((i % 2592000) + 60) * interval '1 second' END
        FROM generate_series(1, {rows}) AS i
        """.replace("%", "%%")  # psycopg's placeholders
    )
    conn.exec_driver_sql("ANALYZE tickets")
    _make_due(conn, due, None)


def _make_due(conn, due: int, _unused: str | None) -> None:  # noqa: ANN001
    """`due` open cases need a step now: half at their reminder, half past acceptance."""
    ids = [
        r[0]
        for r in conn.execute(
            text("SELECT id FROM tickets WHERE status = 'in_progress' ORDER BY id LIMIT :n"),
            {"n": due},
        )
    ]
    for k, ticket_id in enumerate(ids):
        hours = 2 if k % 2 == 0 else -1  # remind (80% of 3 working days) / level 1
        deadline = NOW.timestamp() + hours * 3600
        conn.execute(
            text(
                "UPDATE tickets SET status = 'received', due_resolution = NULL, "
                "due_acceptance = :d, sla_next_check_at = :c WHERE id = :id"
            ),
            {
                "d": _stamp(conn, deadline),
                "c": _stamp(conn, NOW.timestamp() - 60),
                "id": ticket_id,
            },
        )


def _stamp(conn, seconds: float):  # noqa: ANN001, ANN202
    value = datetime.fromtimestamp(seconds, UTC)
    if conn.dialect.name == "sqlite":
        return value.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def run(kind: str, rows: int, due: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        schema = f"bench_sla_{uuid.uuid4().hex[:8]}"
        admin = None
        if kind == "sqlite":
            url = f"sqlite:///{root / 'caseloop.db'}"
        else:
            admin = create_engine(PG, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            url = f"{PG}?options=-csearch_path%3D{schema}"
        try:
            staff = "".join(
                f'[[staff]]\naddress = "staff{i}@ex.org"\nlanguage = "en"\n' for i in range(100)
            )
            (root / "caseloop.toml").write_text(
                f'data_dir = "data"\n[database]\nurl = "{url}"\n'
                '[escalation]\nsupervisors = ["lead@ex.org"]\n' + staff,
                encoding="utf-8",
            )
            config = configmod.load(root / "caseloop.toml")
            engine = make_engine(config.database_url)
            migrate(engine)
            t0 = time.perf_counter()
            with engine.begin() as conn:
                (fill_sqlite if kind == "sqlite" else fill_postgresql)(conn, rows, due)
            fill = time.perf_counter() - t0
            engine.dispose()
            app = App(config, clock=MovableClock(NOW))
            timings = {"fill_s": fill}
            for label in ("first_sweep_s", "second_sweep_s"):
                t0 = time.perf_counter()
                with app.sessions.begin() as session:
                    steps = sla.sweep(session, app.services, NOW)
                timings[label] = time.perf_counter() - t0
                timings[label[:-2] + "_steps"] = steps
            app.close()
            return timings
        finally:
            if admin is not None:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
                admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--due", type=int, default=200)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    args = parser.parse_args()
    for kind in ("sqlite", "postgresql"):
        if args.only and kind != args.only:
            continue
        result = run(kind, args.rows, args.due)
        print(
            f"{kind}: rows={args.rows} due={args.due} fill={result['fill_s']:.1f}s "
            f"first_sweep={result['first_sweep_s']:.3f}s steps={int(result['first_sweep_steps'])} "
            f"second_sweep={result['second_sweep_s']:.3f}s "
            f"steps={int(result['second_sweep_steps'])}",
            flush=True,
        )


if __name__ == "__main__":
    main()
