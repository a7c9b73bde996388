"""Compiled statements run straight on the driver's connection: the engine of the write API.

Per statement, SQLAlchemy's execution machinery costs three to four times what SQLite itself
spends on a small INSERT; on the intake path (about six statements a message) that was most of
the time. A FastStatement is an ordinary Core statement compiled once per dialect and set of
parameter names and then executed on the raw DBAPI connection, on SQLite and PostgreSQL alike:
SQLAlchemy's own bind processors turn values into what Core would have stored (dates, JSON,
booleans), an INSERT fills in the columns' Python-side defaults as Core does, and rows come back
through the result processors, so values read back are the same Python values on both
databases. On PostgreSQL the statement text is the same on every call, so psycopg prepares it
on the server after a few uses, and `executemany` runs in psycopg's pipeline mode: one round
trip for a batch of rows.

Private to daemon/store: handlers use the named operations of daemon/store/writes.py. Only use
it inside a transaction SQLAlchemy has begun (Session.connection() does that).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from sqlalchemy import Connection, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement, Executable, Insert
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Plan:
    sql: str
    names: tuple[str, ...]  # the bind parameters, in the order the SQL takes them
    keys: tuple[str, ...] | None  # named paramstyle (psycopg): the key of each, else None
    literals: dict[str, Any]  # values the statement itself binds (e.g. `value=1`)
    defaults: dict[str, Callable[[], Any]]  # an INSERT's Python-side column defaults
    processors: tuple[Processor, ...]
    results: tuple[Processor, ...]  # per returned column

    def params(self, given: dict[str, Any]) -> list[Any] | dict[str, Any]:
        out = []
        for name, process in zip(self.names, self.processors, strict=True):
            if name in given:
                value = given[name]
            elif name in self.defaults:
                value = self.defaults[name]()
            else:
                value = self.literals[name]
            out.append(process(value) if process is not None and value is not None else value)
        return out if self.keys is None else dict(zip(self.keys, out, strict=True))

    def row(self, found: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(
            process(value) if process is not None else value
            for value, process in zip(found, self.results, strict=True)
        )


def _same(value: Any) -> Any:
    return value


def _column_defaults(table: Table, given: frozenset[str]) -> dict[str, Callable[[], Any]]:
    """The Python-side defaults Core would apply to the columns an INSERT leaves out."""
    defaults: dict[str, Callable[[], Any]] = {}
    for column in table.columns:
        default = column.default
        if column.key in given or default is None:
            continue
        if default.is_scalar:
            defaults[column.key] = partial(_same, cast(Any, default).arg)
        elif default.is_callable:
            defaults[column.key] = partial(cast(Any, default).arg, None)
    return defaults


def insert_values(table: Table, values: dict[str, Any]) -> dict[str, Any]:
    """The values an INSERT of `values` writes: the given ones and the Python-side defaults
    of the columns left out (what Core fills in; deferred.py writes rows itself)."""
    key = (table.name, frozenset(values))
    defaults = _DEFAULTS.get(key)
    if defaults is None:
        defaults = _DEFAULTS[key] = _column_defaults(table, key[1])
    if not defaults:
        return values
    return {**{name: make() for name, make in defaults.items()}, **values}


_DEFAULTS: dict[tuple[str, frozenset[str]], dict[str, Callable[[], Any]]] = {}


def _as_sqlalchemy(conn: Connection, plan: _Plan, exc: Exception) -> Exception:
    """The driver's error as the SQLAlchemy error Core raises for it (IntegrityError, ...), so
    callers catch one kind of error whichever path wrote."""
    return DBAPIError.instance(plan.sql, None, exc, conn.dialect.loaded_dbapi.Error)


class FastStatement:
    """A Core statement compiled once per dialect and parameter names, run on the driver."""

    def __init__(self, statement: Executable) -> None:
        self.statement = statement
        self._plans: dict[tuple[str, frozenset[str]], _Plan] = {}

    def _plan(self, conn: Connection, given: frozenset[str]) -> _Plan:
        dialect = conn.dialect
        plan = self._plans.get((dialect.name, given))
        if plan is None:
            clause = cast(ClauseElement, self.statement)
            defaults: dict[str, Callable[[], Any]] = {}
            columns = None
            if isinstance(clause, Insert):  # an INSERT names its columns by what it is given
                defaults = _column_defaults(cast(Table, clause.table), given)
                columns = sorted(given | set(defaults))
            compiled = cast(SQLCompiler, clause.compile(dialect=dialect, column_keys=columns))
            if compiled.positiontup is not None:
                names, keys = tuple(compiled.positiontup), None
            else:
                names = tuple(compiled.binds)
                escaped: dict[str, str] = compiled.escaped_bind_names or {}
                keys = tuple(escaped.get(name, name) for name in names)
            binds = {name: compiled.binds[name] for name in names}
            plan = self._plans[(dialect.name, given)] = _Plan(
                sql=str(compiled),
                names=names,
                keys=keys,
                literals={n: b.effective_value for n, b in binds.items() if n not in given},
                defaults=defaults,
                processors=tuple(  # per position: a name may come twice (qmark style)
                    binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names
                ),
                results=tuple(
                    column.type.dialect_impl(dialect).result_processor(dialect, None)
                    for column in compiled._result_columns
                ),
            )
        return plan

    def _cursor(self, conn: Connection) -> Any:
        dbapi = conn.connection.dbapi_connection
        assert dbapi is not None, "FastStatement runs only inside a begun transaction"
        return dbapi.cursor()

    def bind(self, conn: Connection, params: dict[str, Any]) -> tuple[str, Any]:
        """The SQL and the driver's parameters of one execution, to send later (deferred.py)."""
        plan = self._plan(conn, frozenset(params))
        return plan.sql, plan.params(params)

    def read(
        self, conn: Connection, params: dict[str, Any], found: Sequence[Sequence[Any]] | None
    ) -> list[tuple[Any, ...]]:
        """Rows the driver returned for `bind(conn, params)`, as Core would read them."""
        plan = self._plan(conn, frozenset(params))
        return [plan.row(row) for row in found or ()]

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Execute; every row it returns (RETURNING or SELECT), as Core would read them."""
        plan = self._plan(conn, frozenset(params))
        cursor = self._cursor(conn)
        try:
            cursor.execute(plan.sql, plan.params(params))
            if cursor.description is None:
                return []
            return [plan.row(found) for found in cursor.fetchall()]
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _as_sqlalchemy(conn, plan, exc) from exc
        finally:
            cursor.close()

    def first(self, conn: Connection, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """Execute; the first row, or None."""
        found = self.rows(conn, params)
        return found[0] if found else None

    def scalar(self, conn: Connection, params: dict[str, Any]) -> Any:
        row = self.first(conn, params)
        return row[0] if row is not None else None

    def executemany(self, conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
        """Execute once per row, batched (rows must share their keys): one round trip for the
        batch on PostgreSQL (psycopg's pipeline mode)."""
        if not rows:
            return
        plan = self._plan(conn, frozenset(rows[0]))
        cursor = self._cursor(conn)
        try:
            cursor.executemany(plan.sql, [plan.params(r) for r in rows])
        except conn.dialect.loaded_dbapi.Error as exc:
            raise _as_sqlalchemy(conn, plan, exc) from exc
        finally:
            cursor.close()
