"""The store's write API: the hot-path writes and look-ups by name, the same on every database.

Handlers call these and never see a dialect, a compiled statement or the driver. Each runs as
a FastStatement (daemon/store/fastpath.py) on the session's connection, inside its transaction.

What a read sees: every look-up here, and every ORM query (autoflush), sees every write made
before it in the transaction, through this API or the ORM. Within that promise, writes reach
the database when something needs them, many at a time, not one statement at a time:

- On PostgreSQL the API's INSERTs and UPDATEs are held and sent in one round trip with the next
  read, SAVEPOINT or COMMIT (daemon/store/deferred.py); new rows take their ids from the
  sequences a block at a time, and case numbers come from a block reserved outside the
  transaction (daemon/store/numbers.py). On SQLite each runs at once (it costs no round trip).
- Pending ORM changes (session.add, attribute changes) are flushed before an API call only when
  they could change what it does: a look-up whose answer they could change, a new row of the
  same table for the same case (one case's rows keep the order they were asked for), an UPDATE
  of a case the ORM changed, or any pending delete. Otherwise they wait for the next ORM query,
  record_items or the commit, and go in one flush (one multi-row INSERT per table).
- `expect` (daemon/store/ahead.py) reads ahead, in one query each, what a batch's look-ups
  will ask (its Message-IDs, its senders' recent automatic mail and the cases their mailboxes
  opened in the last day); those look-ups then answer from that read plus this transaction's
  own writes (kept up to date by the API and by ORM flushes; any other write through the
  session, and any rollback or commit, drops the read-ahead). What the ORM holds unflushed,
  and the per-transaction memo, are daemon/store/pending.py's.

Errors surface as SQLAlchemy's errors (IntegrityError...), at the latest at the next look-up,
at record_items, or when the transaction or savepoint that wrote commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, UOWTransaction
from sqlalchemy.orm.util import identity_key

from daemon.addresses import address_key
from daemon.store import ahead, deferred, numbers
from daemon.store.ahead import expect as expect
from daemon.store.fastpath import FastStatement, insert_values
from daemon.store.models import (
    Attachment,
    Base,
    OutboxMessage,
    SourceItem,
    Ticket,
    TicketCounter,
    TimelineEntry,
)
from daemon.store.pending import added, changed, changed_any, changed_of, new_rows, pending
from daemon.store.pending import memo as memo

# -- writes ----------------------------------------------------------------------------------


def open_case(session: Session, **values: Any) -> int:
    """INSERT a case (tickets row); its id. Columns not given get their model defaults."""
    case_id = _insert(session, Ticket, values, None)
    read = ahead.current(session)
    if read is not None and values.get("complainant_email") and values.get("created_at"):
        read.case_opened(case_id, values["complainant_email"], values["created_at"])
    return case_id


def add_entry(session: Session, **values: Any) -> int:
    """INSERT a timeline entry; its id."""
    entry = _insert(session, TimelineEntry, values, ("ticket_id", values.get("ticket_id")))
    read = ahead.current(session)
    if read is not None and values.get("message_id") is not None:
        read.entries[values["message_id"]] = values.get("ticket_id")
    return entry


def add_attachment(session: Session, **values: Any) -> int:
    """INSERT an attachment row of a timeline entry (the bytes are in the blob store)."""
    return _insert(session, Attachment, values, ("entry_id", values.get("entry_id")))


def queue_outbox(session: Session, **values: Any) -> int:
    """INSERT an outbox row (a rendered mail the sender delivers after commit); its id."""
    values.setdefault("recipient_key", address_key(values["recipient"]))
    values.setdefault("recipient_domain", values["recipient_key"].rpartition("@")[2] or None)
    row = _insert(session, OutboxMessage, values, ("ticket_id", values.get("ticket_id")))
    read = ahead.current(session)
    if read is not None:
        read.queued(values.get("recipient"), values.get("automatic", True), values["created_at"])
    return row


def record_items(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """INSERT a batch's source_items rows; everything the batch wrote reaches the database
    here (its errors surface here at the latest), and the ORM's pending changes with it."""
    session.flush()
    conn = session.connection()
    held = deferred.of(conn)
    if held is None:
        _plain_insert(SourceItem).executemany(conn, rows)
        return
    table = cast(Table, SourceItem.__table__)
    for row in rows:
        held.insert(conn, table, insert_values(table, row))
    deferred.send(conn)


def update_case(session: Session, ticket_id: int, **values: Any) -> None:
    """UPDATE columns of one case by id, without loading it."""
    case = session.identity_map.get(identity_key(Ticket, ticket_id))
    conn = _connection(session, case is not None and changed(case))
    held = deferred.of(conn)
    if held is not None:
        held.update(conn, cast(Table, Ticket.__table__), ticket_id, values)
        session.info[_HOLDING] = conn
        return
    key = tuple(sorted(values))
    statement = _CASE_UPDATES.get(key)
    if statement is None:
        statement = _CASE_UPDATES[key] = FastStatement(
            update(Ticket)
            .where(Ticket.id == bindparam("ticket_id_"))
            .values({name: bindparam(name, type_=Ticket.__table__.c[name].type) for name in key})
        )
    statement.first(conn, {"ticket_id_": ticket_id, **values})


_CASE_UPDATES: dict[tuple[str, ...], FastStatement] = {}


def bump_counter(session: Session, prefix: str, day: date) -> int:
    """The next value of the (prefix, day) counter, never the same twice (see numbers.py)."""
    conn = _connection(session, pending(session, TicketCounter))
    held = deferred.of(conn)
    if held is None:
        return int(_COUNTER_UPSERTS["sqlite"].scalar(conn, {"prefix": prefix, "day": day, "n": 1}))

    def reserve(other: Connection, n: int) -> int:
        upsert = _COUNTER_UPSERTS["postgresql"]
        return int(upsert.scalar(other, {"prefix": prefix, "day": day, "n": n}))

    def give_back(other: Connection, top: int, low: int) -> bool:
        params = {"prefix": prefix, "day": day, "top": top, "low": low - 1}
        return _COUNTER_GIVE_BACK.first(other, params) is not None

    engine = conn.engine
    return held.take_number(numbers.pool(engine, prefix, day, reserve, give_back))


def insert_if_absent(
    session: Session, model: type[Base], conflict: Sequence[str], **values: Any
) -> Any:
    """INSERT a row unless one with the same `conflict` columns (a unique key) exists: the new
    row's primary key, or None when it was already there (taken by an earlier run or another
    instance). One statement, so two writers racing for the row cannot both get it."""
    conn = _connection(session, pending(session, model))
    table = cast(Table, model.__table__)
    key = (conn.dialect.name, table.name, tuple(conflict))
    statement = _IF_ABSENT.get(key)
    if statement is None:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        primary = list(table.primary_key.columns)[0]
        statement = _IF_ABSENT[key] = FastStatement(
            insert(table).on_conflict_do_nothing(index_elements=list(conflict)).returning(primary)
        )
    found = deferred.read(conn, statement, values)
    return found[0][0] if found else None


_IF_ABSENT: dict[tuple[str, str, tuple[str, ...]], FastStatement] = {}

# -- look-ups on the hot path ----------------------------------------------------------------


def case_of_message(session: Session, message_id: str) -> int | None:
    """The case a Message-ID we sent or received is recorded on, or None."""
    unflushed = any(
        vars(obj).get("message_id") == message_id for obj in new_rows(session, TimelineEntry)
    ) or changed_any(session, TimelineEntry)
    read = ahead.current(session)
    if not unflushed and read is not None and message_id in read.entries:
        return read.entries[message_id]
    conn = _connection(session, unflushed)
    found = deferred.read(conn, _CASE_OF_MESSAGE, {"message_id": message_id})
    return int(found[0][0]) if found else None


def content_of_message(session: Session, message_id: str) -> tuple[Any, ...] | None:
    """(sender, subject, text, raw digest) of the entry recorded with a Message-ID, or None."""
    unflushed = any(
        vars(obj).get("message_id") == message_id for obj in new_rows(session, TimelineEntry)
    ) or changed_any(session, TimelineEntry)
    conn = _connection(session, unflushed)
    found = deferred.read(conn, _CONTENT_OF_MESSAGE, {"message_id": message_id})
    return tuple(found[0]) if found else None


def intent_taken(session: Session, intent: str) -> bool:
    """Whether a mail with this intent is already in the outbox (at most one per intent)."""
    conn = _connection(session, pending(session, OutboxMessage))
    return bool(deferred.read(conn, _INTENT_TAKEN, {"intent": intent}))


def automatic_mail_count(session: Session, recipient: str, since: datetime) -> int:
    """Automatic mails queued to `recipient`'s mailbox (any sub-address, any case) after
    `since`."""
    recipient = address_key(recipient)
    unflushed = pending(session, OutboxMessage)
    read = ahead.current(session)
    if not unflushed and read is not None:
        count = read.automatic_count(recipient, since)
        if count is not None:
            return count
    conn = _connection(session, unflushed)
    found = deferred.read(conn, _RECENT_AUTOMATIC, {"recipient": recipient, "since": since})
    return int(found[0][0] or 0) if found else 0


def cases_opened_by(session: Session, address: str, since: datetime) -> tuple[int, int | None]:
    """How many cases the mailbox of `address` (any sub-address) opened after `since`, and
    the latest of them."""
    key = address_key(address)
    read = ahead.current(session)
    known = read.opened_by(key, since) if read is not None else None
    if known is not None:
        return known
    local, _, domain = key.partition("@")
    # The batch's own cases went in through this API (only their status changes wait in the
    # ORM): nothing to flush for who opened them, when.
    conn = _connection(session, False)
    params: dict[str, Any] = {"exact": f"{local}@{domain}", "low": f"{local}+"}
    params |= {"high": f"{local},", "domain": f"%@{domain}", "since": since}
    found = deferred.read(conn, _OPENED_BY, params)
    return (int(found[0][0] or 0), found[0][1]) if found else (0, None)


def automatic_mail_to_domain(session: Session, domain: str, since: datetime) -> int:
    """Acknowledgements (and requests for details) queued to anyone at `domain` after `since`."""
    conn = _connection(session, pending(session, OutboxMessage))
    found = deferred.read(conn, _TO_DOMAIN, {"domain": domain, "since": since})
    return int(found[0][0] or 0) if found else 0


def last_mail_of(session: Session, recipient: str, kinds: tuple[str, str]) -> datetime | None:
    """When the latest mail of either kind was queued to `recipient`'s mailbox, or None."""
    conn = _connection(session, pending(session, OutboxMessage))
    params = {"key": address_key(recipient), "kind1": kinds[0], "kind2": kinds[1]}
    found = deferred.read(conn, _LAST_MAIL_OF, params)
    return found[0][0] if found else None


def recent_cases(
    session: Session, respondent_key: str, since: datetime, until: datetime, limit: int
) -> list[tuple[int, str, str, str | None, str | None]]:
    """(id, number, complainant address, extra's gist, extra's group id) of the latest `limit`
    cases against one respondent opened from `since` to `until`, newest first. The two are
    read out of the JSON by the database: decoding whole `extra`s cost more than the query."""
    unflushed = any(
        vars(t).get("respondent_key") == respondent_key for t in new_rows(session, Ticket)
    ) or any(_WHO_WHEN & state.committed_state.keys() for state in changed_of(session, Ticket))
    conn = _connection(session, unflushed)
    params = {"key": respondent_key, "since": since, "now": until, "limit": limit}
    found = deferred.read(conn, _RECENT_CASES, params)
    return [(row[0], row[1], row[2], row[3], row[4]) for row in found]


_WHO_WHEN = {"respondent_key", "complainant_email", "created_at", "extra"}


def outbox_of_message(session: Session, message_id: str) -> tuple[int, int | None, str] | None:
    """(outbox id, case id, recipient) of the mail we sent with this Message-ID, or None."""
    conn = _connection(session, pending(session, OutboxMessage))
    found = deferred.read(conn, _OUTBOX_BY_MESSAGE_ID, {"message_id": message_id})
    return (int(found[0][0]), found[0][1], str(found[0][2])) if found else None


# -- what the API holds back ----------------------------------------------------------------


@event.listens_for(Session, "before_flush")
def _orm_rows_take_ids_in_turn(session: Session, _flush: UOWTransaction, _objects: Any) -> None:
    """On PostgreSQL new ORM rows of the API's tables take their ids from the same blocks as
    the API's rows (deferred.py), so ids follow the order rows were written in."""
    new = added(session)
    if not new:
        return
    conn = session.connection()
    held = deferred.of(conn)
    if held is None:
        return
    for obj in new:
        if type(obj) in _DRAWN and vars(obj).get("id") is None and obj in session:
            obj.id = held.next_id(conn, cast(Table, type(obj).__table__))


_DRAWN = (Ticket, TimelineEntry, Attachment, OutboxMessage)


@event.listens_for(Session, "before_commit")
def _send_before_commit(session: Session) -> None:
    """A transaction or savepoint commits: what the API held is sent first, so an error
    surfaces here, while the savepoint can still be rolled back (the intake's isolation)."""
    conn: Connection | None = session.info.get(_HOLDING)
    if conn is not None and not conn.closed and not conn.invalidated and deferred.of(conn):
        deferred.send(conn)


_HOLDING = "caseloop.holding"  # session.info: the connection the API last held writes on


# -- statements, built once ------------------------------------------------------------------


def _connection(session: Session, flush: bool) -> Connection:
    """The transaction's connection, the ORM's pending changes flushed first when the caller
    says they matter (see the module's docstring), and always when one is a delete."""
    if flush or session.deleted:
        session.flush()
    return session.connection()


def _insert(
    session: Session, model: type[Base], values: dict[str, Any], case: tuple[str, Any] | None
) -> int:
    """INSERT one row of `model`; its id. `case`: (column, value) naming what the row belongs
    to; a new ORM row of the same table and owner is flushed first (the order of its rows)."""
    same = case is not None and any(
        vars(obj).get(case[0]) == case[1] for obj in new_rows(session, model)
    )
    conn = _connection(session, same)
    held = deferred.of(conn)
    table = cast(Table, model.__table__)
    if held is None:
        return int(_returning_insert(model).scalar(conn, values))
    row_id = values["id"] if values.get("id") is not None else held.next_id(conn, table)
    held.insert(conn, table, insert_values(table, {**values, "id": row_id}))
    session.info[_HOLDING] = conn
    return row_id


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
        .values(prefix=bindparam("prefix"), day=bindparam("day"), value=bindparam("n"))
        .on_conflict_do_update(
            index_elements=[TicketCounter.prefix, TicketCounter.day],
            set_={"value": TicketCounter.value + bindparam("n")},
        )
        .returning(TicketCounter.value)
    )


_COUNTER_UPSERTS = {
    "sqlite": _counter_upsert(sqlite.insert),
    "postgresql": _counter_upsert(postgresql.insert),
}
_COUNTER_GIVE_BACK = FastStatement(
    update(TicketCounter)
    .where(
        TicketCounter.prefix == bindparam("prefix"),
        TicketCounter.day == bindparam("day"),
        TicketCounter.value == bindparam("top"),
    )
    .values(value=bindparam("low"))
    .returning(TicketCounter.value)
)
_CASE_OF_MESSAGE = FastStatement(
    select(TimelineEntry.ticket_id).where(TimelineEntry.message_id == bindparam("message_id"))
)
_CONTENT_OF_MESSAGE = FastStatement(
    select(
        TimelineEntry.actor, TimelineEntry.subject, TimelineEntry.text, TimelineEntry.raw_sha256
    ).where(TimelineEntry.message_id == bindparam("message_id"))
)
_INTENT_TAKEN = FastStatement(
    select(OutboxMessage.id).where(OutboxMessage.intent == bindparam("intent"))
)
_RECENT_AUTOMATIC = FastStatement(
    select(func.count())
    .select_from(OutboxMessage)
    .where(
        OutboxMessage.recipient_key == bindparam("recipient"),
        OutboxMessage.automatic.is_(True),
        OutboxMessage.created_at > bindparam("since", type_=OutboxMessage.created_at.type),
    )
)
_RECENT_CASES = FastStatement(
    select(
        Ticket.id,
        Ticket.number,
        Ticket.complainant_email,
        Ticket.extra["gist"].as_string(),
        Ticket.extra[("group", "id")].as_string(),
    )
    .where(
        Ticket.respondent_key == bindparam("key"),
        Ticket.created_at >= bindparam("since", type_=Ticket.created_at.type),
        Ticket.created_at <= bindparam("now", type_=Ticket.created_at.type),
    )
    .order_by(Ticket.created_at.desc(), Ticket.id.desc())
    .limit(bindparam("limit"))
)
_LAST_MAIL_OF = FastStatement(
    select(func.max(OutboxMessage.created_at)).where(
        OutboxMessage.recipient_key == bindparam("key"),
        or_(OutboxMessage.kind == bindparam("kind1"), OutboxMessage.kind == bindparam("kind2")),
        OutboxMessage.status != "folded",
    )
)
_TO_DOMAIN = FastStatement(
    select(func.count())
    .select_from(OutboxMessage)
    .where(
        OutboxMessage.recipient_domain == bindparam("domain"),
        OutboxMessage.created_at > bindparam("since", type_=OutboxMessage.created_at.type),
        or_(OutboxMessage.kind == "ack", OutboxMessage.kind == "request_info"),
    )
)
_OPENED_BY = FastStatement(  # "a@d" or "a+anything@d": the range keeps to the index
    select(func.count(), func.max(Ticket.id)).where(
        or_(
            Ticket.complainant_email == bindparam("exact"),
            and_(
                Ticket.complainant_email >= bindparam("low"),
                Ticket.complainant_email < bindparam("high"),
                Ticket.complainant_email.like(bindparam("domain")),
            ),
        ),
        Ticket.created_at > bindparam("since", type_=Ticket.created_at.type),
    )
)
_OUTBOX_BY_MESSAGE_ID = FastStatement(
    select(OutboxMessage.id, OutboxMessage.ticket_id, OutboxMessage.recipient).where(
        OutboxMessage.message_id == bindparam("message_id")
    )
)
