"""Hot-path statements: on SQLite, compiled once and run straight on the sqlite3 connection.

Per statement, SQLAlchemy's execution machinery costs three to four times what SQLite itself
spends on a small INSERT; on the intake path (about six statements a message) that was most of
the time. A FastStatement is an ordinary Core statement that, on SQLite, is compiled once per
set of parameter names and then executed on the raw connection, with SQLAlchemy's own bind
processors turning values into what Core would have stored (dates, JSON, booleans), so the rows
are the same either way. On any other database it simply runs through Core.

Only use it inside a transaction SQLAlchemy has begun (Session.connection() does that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.sql import ClauseElement, Executable, Insert
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True)
class _Plan:
    sql: str
    names: tuple[str, ...]
    literals: dict[str, Any]  # values the statement itself binds (e.g. `value=1`)
    processors: tuple[Callable[[Any], Any] | None, ...]

    def row(self, params: dict[str, Any]) -> list[Any]:
        out = []
        for name, process in zip(self.names, self.processors, strict=True):
            value = params[name] if name in params else self.literals[name]
            out.append(process(value) if process is not None and value is not None else value)
        return out


class FastStatement:
    """A Core statement with a precompiled SQLite fast path."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._plans: dict[frozenset[str], _Plan] = {}

    def _plan(self, conn: Connection, keys: frozenset[str]) -> _Plan:
        plan = self._plans.get(keys)
        if plan is None:
            dialect = conn.dialect
            clause = cast(ClauseElement, self.statement)
            # An INSERT names its columns by the parameters given; other statements bind by name.
            columns = sorted(keys) if isinstance(clause, Insert) else None
            compiled = cast(SQLCompiler, clause.compile(dialect=dialect, column_keys=columns))
            names = tuple(compiled.positiontup or ())
            binds = {name: compiled.binds[name] for name in names}
            plan = self._plans[keys] = _Plan(
                sql=str(compiled),
                names=names,
                literals={n: b.effective_value for n, b in binds.items() if n not in keys},
                processors=tuple(
                    b.type.dialect_impl(dialect).bind_processor(dialect) for b in binds.values()
                ),
            )
        return plan

    def first(self, conn: Connection, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """Execute; the first row (RETURNING or SELECT), or None."""
        if conn.dialect.name != "sqlite":
            result = conn.execute(self.statement, params)
            row = result.first() if result.returns_rows else None
            return tuple(row) if row is not None else None
        plan = self._plan(conn, frozenset(params))
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.execute(plan.sql, plan.row(params))
        found = cursor.fetchone()
        cursor.close()
        return tuple(found) if found is not None else None

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Execute; every row (values as the raw driver gives them on SQLite)."""
        if conn.dialect.name != "sqlite":
            return [tuple(r) for r in conn.execute(self.statement, params)]
        plan = self._plan(conn, frozenset(params))
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        cursor = dbapi.execute(plan.sql, plan.row(params))
        found = [tuple(r) for r in cursor.fetchall()]
        cursor.close()
        return found

    def scalar(self, conn: Connection, params: dict[str, Any]) -> Any:
        row = self.first(conn, params)
        return row[0] if row is not None else None

    def executemany(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Execute once per row, batched (rows must share their keys)."""
        if not rows:
            return
        if conn.dialect.name != "sqlite":
            conn.execute(self.statement, list(rows))
            return
        plan = self._plan(conn, frozenset(rows[0]))
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None
        dbapi.executemany(plan.sql, [plan.row(r) for r in rows])
