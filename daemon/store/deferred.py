"""Writes held back on PostgreSQL and sent together, in one round trip, before anything reads.

On PostgreSQL every statement the write API sends alone costs a round trip to the server and
its wake-up (about 0.1 ms on loopback, more when the two share a core), where SQLite answers in
the same process. So on PostgreSQL the API's INSERTs and UPDATEs, which nobody waits for, are
held per connection here and sent when something needs the database to be current:

- before any statement SQLAlchemy itself runs on the connection (an ORM flush or query, Core,
  SAVEPOINT, RELEASE SAVEPOINT), and before COMMIT;
- by the write API before each look-up it asks the database (sent with it, in the same round
  trip), and when a session's transaction or savepoint commits (writes.py hooks the session:
  an error then surfaces inside `savepoint.commit()`, where the intake sets one item aside).

A send is one psycopg pipeline: the INSERTs of each table become one multi-row INSERT (rows
passed as arrays, in the order of the tables' foreign keys), then the UPDATEs in the order they
were asked for. Rows carry their ids already: ids are drawn from the tables' sequences a block
at a time (one round trip for a transaction's worth; `nextval` is not transactional, so the
ids of a rolled-back transaction are never reused, as with one INSERT at a time), so nothing
needs RETURNING. A rollback to a savepoint drops what was held since the savepoint began (the
hold was sent at SAVEPOINT). A driver error is raised as SQLAlchemy's error (IntegrityError...).

Private to daemon/store: make_engine (db.py) installs the hooks on PostgreSQL engines; writes.py
decides what to hold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import PoolProxiedConnection

from daemon.store.fastpath import FastStatement
from daemon.store.models import Base
from daemon.store.numbers import NumberPool

_KEY = "caseloop.deferred"
# Tables in the order their foreign keys need (a case before its entries...).
_TABLE_ORDER = {table.name: i for i, table in enumerate(Base.metadata.sorted_tables)}
# ids a transaction drew per table, remembered per process: the size of the next block.
_DEMAND: dict[str, int] = {}
_DEMAND_LOCK = threading.Lock()
_MIN_BLOCK, _MAX_BLOCK = 4, 2000


@dataclass
class _Rows:
    """Rows of one table with one set of columns, as one statement taking a column's values
    as one array each (a multi-row INSERT, or an UPDATE of rows by id)."""

    table: str
    sql: str
    processors: tuple[Callable[[Any], Any] | None, ...]
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)

    def params(self) -> list[list[Any]]:
        """One array per column (unnest's arguments), values as Core would bind them."""
        out: list[list[Any]] = [[] for _ in self.columns]
        for row in self.rows:
            for values, value, bind in zip(out, row, self.processors, strict=True):
                values.append(bind(value) if bind is not None and value is not None else value)
        return out

    def like(self) -> _Rows:
        """The same statement, with no rows yet."""
        return _Rows(self.table, self.sql, self.processors, self.columns)


_TEMPLATES: dict[tuple[str, str, tuple[str, ...]], _Rows] = {}


def _template(conn: Connection, kind: str, table: Table, columns: tuple[str, ...]) -> _Rows:
    """INSERT rows of these columns, or (kind "update") UPDATE rows by id, the id first."""
    key = (kind, table.name, columns)
    template = _TEMPLATES.get(key)
    if template is None:
        dialect = conn.dialect
        types = [table.c[c].type for c in columns]
        arrays = ", ".join(f"%s::{t.compile(dialect=dialect)}[]" for t in types)
        quote = dialect.identifier_preparer.quote
        name, names = quote(table.name), [quote(c) for c in columns]
        if kind == "insert":
            sql = f"INSERT INTO {name} ({', '.join(names)}) SELECT * FROM unnest({arrays})"
        else:
            sets = ", ".join(f"{c} = v.{c}" for c in names[1:])
            sql = (
                f"UPDATE {name} SET {sets} FROM unnest({arrays}) AS v({', '.join(names)}) "
                f"WHERE {name}.{names[0]} = v.{names[0]}"
            )
        template = _TEMPLATES[key] = _Rows(
            table=table.name,
            sql=sql,
            processors=tuple(t.dialect_impl(dialect).bind_processor(dialect) for t in types),
            columns=columns,
        )
    return template


class Deferred:
    """What one PostgreSQL connection holds back in its transaction, and its ids."""

    def __init__(self) -> None:
        self.inserts: dict[tuple[str, tuple[str, ...]], _Rows] = {}
        self.updates: list[_Rows] = []
        self.ids: dict[str, list[int]] = {}  # drawn from the sequence, not used yet
        self.drawn: dict[str, int] = {}  # ids this transaction used, per table
        self.numbers: list[tuple[NumberPool, int]] = []  # case numbers it took (numbers.py)
        self.marks: list[int] = []  # len(numbers) when each open savepoint began

    def __bool__(self) -> bool:
        return bool(self.inserts or self.updates)

    def insert(self, conn: Connection, table: Table, values: dict[str, Any]) -> None:
        """Hold an INSERT of one row (values name every column to write, the id too)."""
        columns = tuple(sorted(values))
        rows = self.inserts.get((table.name, columns))
        if rows is None:
            rows = _template(conn, "insert", table, columns).like()
            self.inserts[(table.name, columns)] = rows
        rows.rows.append(tuple(values[c] for c in columns))

    def update(self, conn: Connection, table: Table, row_id: int, values: dict[str, Any]) -> None:
        """Hold an UPDATE of one row by id. A run of UPDATEs of the same columns of different
        rows goes as one statement; the UPDATEs go in the order they were asked for."""
        columns = ("id", *sorted(values))
        last = self.updates[-1] if self.updates else None
        if (
            last is None
            or (last.table, last.columns) != (table.name, columns)
            or any(row[0] == row_id for row in last.rows)
        ):
            last = _template(conn, "update", table, columns).like()
            self.updates.append(last)
        last.rows.append((row_id, *(values[c] for c in columns[1:])))

    def take(self) -> list[tuple[str, Any]]:
        """The held statements in the order to send them, the INSERTs first (in the order of
        the tables' foreign keys), then the UPDATEs; nothing is held after."""
        inserts = sorted(self.inserts.items(), key=lambda item: _TABLE_ORDER[item[0][0]])
        statements = [(rows.sql, rows.params()) for _, rows in inserts]
        statements += [(rows.sql, rows.params()) for rows in self.updates]
        self.inserts, self.updates = {}, []
        return statements

    def next_id(self, conn: Connection, table: Table) -> int:
        """An id for a new row of `table`, from its sequence, a block at a time."""
        free = self.ids.get(table.name)
        if not free:
            used = self.drawn.get(table.name, 0)
            with _DEMAND_LOCK:
                size = max(_MIN_BLOCK, _DEMAND.get(table.name, 0) - used, used)
            size = min(size, _MAX_BLOCK)
            sql = "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)"
            found = send(conn, (sql, (table.name, size)))
            free = self.ids[table.name] = [int(row[0]) for row in found or ()]
            free.reverse()  # pop() hands them out in ascending order
        self.drawn[table.name] = self.drawn.get(table.name, 0) + 1
        return free.pop()

    def take_number(self, pool: NumberPool) -> int:
        """The next case number of a counter, for this transaction."""
        number = pool.take(sum(1 for p, _ in self.numbers if p is pool))
        self.numbers.append((pool, number))
        return number

    def give_numbers_back(self, since: int = 0) -> None:
        """The case numbers taken since the `since`-th were rolled back: free again."""
        back: dict[NumberPool, list[int]] = {}
        for pool, number in self.numbers[since:]:
            back.setdefault(pool, []).append(number)
        for pool, numbers in back.items():
            pool.restore(numbers)
        del self.numbers[since:]

    def end_transaction(self, committed: bool) -> None:
        """The transaction ended: remember how many ids it drew (unused ones are dropped: the
        ids of one transaction stay together, in the order its rows were asked for); settle
        or give back its case numbers."""
        if self.drawn:
            with _DEMAND_LOCK:
                _DEMAND.update(self.drawn)
        if committed:
            took: dict[NumberPool, int] = {}
            for pool, _ in self.numbers:
                took[pool] = took.get(pool, 0) + 1
            for pool, count in took.items():
                pool.settle(count)
            self.numbers = []
        else:
            self.give_numbers_back()
        self.inserts, self.updates, self.ids, self.drawn, self.marks = {}, [], {}, {}, []


def of(conn: Connection) -> Deferred | None:
    """The connection's holder of writes, or None where writes are not held (SQLite, or an
    engine make_engine did not make)."""
    return cast(Deferred | None, conn.info.get(_KEY))


def send(conn: Connection, read: tuple[str, Any] | None = None) -> list[tuple[Any, ...]] | None:
    """Send what the connection holds, then `read` (SQL and parameters) if given, in one
    round trip; the rows `read` returned."""
    deferred = of(conn)
    statements = deferred.take() if deferred else []
    if not statements and read is None:
        return None
    dbapi = cast(PoolProxiedConnection, conn.connection).dbapi_connection
    assert dbapi is not None
    cursor = dbapi.cursor()
    reader = dbapi.cursor() if read is not None else None
    try:
        if statements:
            with dbapi.pipeline():
                for sql, params in statements:
                    cursor.execute(sql, params)
                if reader is not None and read is not None:
                    reader.execute(*read)
        elif reader is not None and read is not None:
            reader.execute(*read)
        if reader is None or reader.description is None:
            return None
        return list(reader.fetchall())
    except conn.dialect.loaded_dbapi.Error as exc:
        sql = "; ".join(s for s, _ in statements) + (f"; {read[0]}" if read else "")
        raise DBAPIError.instance(sql, None, exc, conn.dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()
        if reader is not None:
            reader.close()


def read(conn: Connection, statement: FastStatement, params: dict[str, Any]) -> list[Any]:
    """Run a statement that answers (the write API's look-ups, the read-ahead); on PostgreSQL
    with what the connection holds, in one round trip."""
    if of(conn) is None:
        return statement.rows(conn, params)
    return statement.read(conn, params, send(conn, statement.bind(conn, params)))


# -- hooks ------------------------------------------------------------------------------------


def install(engine: Engine) -> None:
    """Hold the write API's writes on this PostgreSQL engine's connections (see above)."""
    event.listen(engine, "engine_connect", _attach)
    event.listen(engine, "before_cursor_execute", _before_statement)
    event.listen(engine, "commit", _before_commit)
    event.listen(engine, "rollback", _after_rollback)
    event.listen(engine, "savepoint", _before_savepoint)
    event.listen(engine, "release_savepoint", _before_release)
    event.listen(engine, "rollback_savepoint", _rollback_savepoint)


def _attach(conn: Connection) -> None:
    deferred = conn.info.get(_KEY)
    if deferred is None:
        conn.info[_KEY] = Deferred()
    elif deferred or deferred.numbers:  # its transaction ended unseen (an invalidated one)
        deferred.end_transaction(committed=False)


def _before_statement(conn: Connection, *_args: Any) -> None:
    if _held(conn):
        send(conn)


def _before_commit(conn: Connection) -> None:
    deferred = _held(conn)
    if deferred is None:
        return
    if deferred:
        send(conn)  # an error here fails the commit; the rollback that follows cleans up
    deferred.end_transaction(committed=True)


def _after_rollback(conn: Connection) -> None:
    deferred = _held(conn)
    if deferred is not None:
        deferred.end_transaction(committed=False)


def _before_savepoint(conn: Connection, _name: str | None) -> None:
    deferred = _held(conn)
    if deferred is None:
        return
    if deferred:
        send(conn)
    deferred.marks.append(len(deferred.numbers))


def _before_release(conn: Connection, _name: str, _xid: Any) -> None:
    deferred = _held(conn)
    if deferred is None:
        return
    if deferred:
        send(conn)
    if deferred.marks:
        deferred.marks.pop()


def _rollback_savepoint(conn: Connection, _name: str, _xid: Any) -> None:
    deferred = _held(conn)
    if deferred is None:
        return
    # What was held since the savepoint began (the hold was sent at SAVEPOINT) is undone.
    deferred.inserts, deferred.updates = {}, []
    deferred.give_numbers_back(deferred.marks.pop() if deferred.marks else 0)


def _held(conn: Connection) -> Deferred | None:
    """The connection's Deferred; None when it has none or can no longer say (invalidated)."""
    try:
        return cast(Deferred | None, conn.info.get(_KEY))
    except Exception:  # noqa: BLE001 - a connection being invalidated has no info to give
        return None
