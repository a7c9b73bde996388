"""The store's write API: the hot-path writes and look-ups by name, the same on every database.

Handlers call these and never see a dialect, a compiled statement or the driver. Each runs as
a FastStatement (daemon/store/fastpath.py) on the session's connection, inside its transaction.

One write order: everything is written in the order the code asks for it. Each operation first
flushes the session's pending ORM changes, so a row added with `session.add` is in the
database before the statement that follows it, and the ORM's autoflush does the same before
its own queries; nothing is held back for later. So every read, through this API or the ORM,
sees every write before it in the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, SessionTransaction

from daemon.store.fastpath import FastStatement
from daemon.store.models import (
    Attachment,
    Base,
    OutboxMessage,
    SourceItem,
    Ticket,
    TicketCounter,
    TimelineEntry,
)

# -- writes ----------------------------------------------------------------------------------


def open_case(session: Session, **values: Any) -> int:
    """INSERT a case (tickets row); its id. Columns not given get their model defaults."""
    return int(_insert(session, Ticket, values))


def add_entry(session: Session, **values: Any) -> int:
    """INSERT a timeline entry; its id."""
    return int(_insert(session, TimelineEntry, values))


def add_attachment(session: Session, **values: Any) -> int:
    """INSERT an attachment row of a timeline entry (the bytes are in the blob store)."""
    return int(_insert(session, Attachment, values))


def queue_outbox(session: Session, **values: Any) -> int:
    """INSERT an outbox row (a rendered mail the sender delivers after commit); its id."""
    return int(_insert(session, OutboxMessage, values))


def record_items(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT a batch's source_items rows in one statement batch (rows share their keys)."""
    _plain_insert(SourceItem).executemany(_connection(session), rows)


def update_case(session: Session, ticket_id: int, **values: Any) -> None:
    """UPDATE columns of one case by id, without loading it."""
    key = tuple(sorted(values))
    statement = _CASE_UPDATES.get(key)
    if statement is None:
        statement = _CASE_UPDATES[key] = FastStatement(
            update(Ticket)
            .where(Ticket.id == bindparam("ticket_id_"))
            .values({name: bindparam(name, type_=Ticket.__table__.c[name].type) for name in key})
        )
    statement.first(_connection(session), {"ticket_id_": ticket_id, **values})


_CASE_UPDATES: dict[tuple[str, ...], FastStatement] = {}


def bump_counter(session: Session, prefix: str, day: date) -> int:
    """The next value of the (prefix, day) counter, bumped atomically in the database."""
    conn = _connection(session)
    return int(_COUNTER_UPSERTS[conn.dialect.name].scalar(conn, {"prefix": prefix, "day": day}))


def insert_if_absent(
    session: Session, model: type[Base], conflict: Sequence[str], **values: Any
) -> Any:
    """INSERT a row unless one with the same `conflict` columns (a unique key) exists: the new
    row's primary key, or None when it was already there (taken by an earlier run or another
    instance). One statement, so two writers racing for the row cannot both get it."""
    conn = _connection(session)
    table = cast(Table, model.__table__)
    key = (conn.dialect.name, table.name, tuple(conflict))
    statement = _IF_ABSENT.get(key)
    if statement is None:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        primary = list(table.primary_key.columns)[0]
        statement = _IF_ABSENT[key] = FastStatement(
            insert(table).on_conflict_do_nothing(index_elements=list(conflict)).returning(primary)
        )
    return statement.scalar(conn, values)


_IF_ABSENT: dict[tuple[str, str, tuple[str, ...]], FastStatement] = {}

# -- look-ups on the hot path ----------------------------------------------------------------


def case_of_message(session: Session, message_id: str) -> int | None:
    """The case a Message-ID we sent or received is recorded on, or None."""
    found = _scalar(session, _CASE_OF_MESSAGE, {"message_id": message_id})
    return int(found) if found is not None else None


def intent_taken(session: Session, intent: str) -> bool:
    """Whether a mail with this intent is already in the outbox (at most one per intent)."""
    return _scalar(session, _INTENT_TAKEN, {"intent": intent}) is not None


def automatic_mail_count(session: Session, recipient: str, since: datetime) -> int:
    """Automatic mails queued to `recipient` (lower-case) after `since`."""
    return int(_scalar(session, _RECENT_AUTOMATIC, {"recipient": recipient, "since": since}) or 0)


def complainants(
    session: Session, respondent_key: str, since: datetime, until: datetime, limit: int
) -> set[str]:
    """Up to `limit` distinct complainant addresses (lower-case) of cases against one
    respondent opened from `since` to `until`."""
    params = {"key": respondent_key, "since": since, "now": until, "limit": limit}
    return {row[0] for row in _COMPLAINANTS.rows(_connection(session), params)}


def outbox_of_message(session: Session, message_id: str) -> tuple[int, int | None, str] | None:
    """(outbox id, case id, recipient) of the mail we sent with this Message-ID, or None."""
    found = _OUTBOX_BY_MESSAGE_ID.first(_connection(session), {"message_id": message_id})
    return (int(found[0]), found[1], str(found[2])) if found is not None else None


# -- per-transaction memo --------------------------------------------------------------------


def memo(session: Session, name: str) -> dict[Any, Any]:
    """Scratch space for what a handler worked out in this transaction (e.g. a respondent
    found to be a group complaint). A rollback, a savepoint's included, forgets all of it:
    what it was worked out from may be gone."""
    memos: dict[str, dict[Any, Any]] = session.info.setdefault(_MEMO, {})
    return memos.setdefault(name, {})


_MEMO = "caseloop.memo"


@event.listens_for(Session, "after_soft_rollback")
def _forget_memo(session: Session, _previous: SessionTransaction) -> None:
    session.info.pop(_MEMO, None)


@event.listens_for(Session, "after_commit")
def _memo_ends_with_transaction(session: Session) -> None:
    session.info.pop(_MEMO, None)


# -- statements, built once ------------------------------------------------------------------


def _connection(session: Session) -> Connection:
    """The transaction's connection, once the session's pending ORM changes are written:
    the one write order (see the module's docstring)."""
    session.flush()
    return session.connection()


def _insert(session: Session, model: type[Base], values: dict[str, Any]) -> Any:
    return _returning_insert(model).scalar(_connection(session), values)


def _scalar(session: Session, statement: FastStatement, params: dict[str, Any]) -> Any:
    return statement.scalar(_connection(session), params)


def _returning_insert(model: type[Base]) -> FastStatement:
    table = cast(Table, model.__table__)
    statement = _INSERTS.get(table.name)
    if statement is None:
        statement = _INSERTS[table.name] = FastStatement(table.insert().returning(table.c.id))
    return statement


def _plain_insert(model: type[Base]) -> FastStatement:
    table = cast(Table, model.__table__)
    statement = _PLAIN_INSERTS.get(table.name)
    if statement is None:
        statement = _PLAIN_INSERTS[table.name] = FastStatement(table.insert())
    return statement


_INSERTS: dict[str, FastStatement] = {}
_PLAIN_INSERTS: dict[str, FastStatement] = {}


def _counter_upsert(insert: Any) -> FastStatement:
    return FastStatement(
        insert(TicketCounter)
        .values(prefix=bindparam("prefix"), day=bindparam("day"), value=1)
        .on_conflict_do_update(
            index_elements=[TicketCounter.prefix, TicketCounter.day],
            set_={"value": TicketCounter.value + 1},
        )
        .returning(TicketCounter.value)
    )


_COUNTER_UPSERTS = {
    "sqlite": _counter_upsert(sqlite.insert),
    "postgresql": _counter_upsert(postgresql.insert),
}

_CASE_OF_MESSAGE = FastStatement(
    select(TimelineEntry.ticket_id).where(TimelineEntry.message_id == bindparam("message_id"))
)
_INTENT_TAKEN = FastStatement(
    select(OutboxMessage.id).where(OutboxMessage.intent == bindparam("intent"))
)
_RECENT_AUTOMATIC = FastStatement(
    select(func.count())
    .select_from(OutboxMessage)
    .where(
        OutboxMessage.recipient == bindparam("recipient"),
        OutboxMessage.automatic.is_(True),
        OutboxMessage.created_at > bindparam("since", type_=OutboxMessage.created_at.type),
    )
)
_COMPLAINANTS = FastStatement(
    select(func.lower(func.trim(Ticket.complainant_email)))
    .where(
        Ticket.respondent_key == bindparam("key"),
        Ticket.created_at >= bindparam("since", type_=Ticket.created_at.type),
        Ticket.created_at <= bindparam("now", type_=Ticket.created_at.type),
    )
    .distinct()
    .limit(bindparam("limit"))
)
_OUTBOX_BY_MESSAGE_ID = FastStatement(
    select(OutboxMessage.id, OutboxMessage.ticket_id, OutboxMessage.recipient).where(
        OutboxMessage.message_id == bindparam("message_id")
    )
)
