"""A batch's look-ups read ahead: what the write API's look-ups will ask about a batch, read
in one query each before it is decided (see writes.py).

`expect` reads which of the batch's Message-IDs are taken in, the automatic mail queued to
its senders lately, and the cases their mailboxes opened in the last day. The look-ups then
answer from that read plus this transaction's own writes, kept up to date by the write API
(`opened`, `queued`, `entry`) and by ORM flushes. Any other write through the session, and any
rollback or commit, drops the read-ahead: the look-ups then ask the database again.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import and_, bindparam, event, func, or_, select
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from daemon.addresses import address_key
from daemon.store import deferred
from daemon.store.fastpath import FastStatement
from daemon.store.models import OutboxMessage, Ticket, TimelineEntry
from daemon.store.pending import changed_any, changed_of, drop, memo, peek

# How far back `expect` reads: covers the hourly cap on automatic mail (handlers/notify.py)
# and the daily cap on cases a mailbox opens (handlers/intake.py).
WINDOW = timedelta(days=1)


class Ahead:
    """What `expect` read, kept current with this transaction's writes."""

    def __init__(self, since: datetime) -> None:
        self.entries: dict[str, int | None] = {}  # Message-ID -> case (None: not taken in)
        self.since = since  # automatic mail and cases opened read from here on
        self.automatic: dict[str, list[datetime]] = {}  # recipient -> when each was queued
        # a sender's mailbox (address_key) -> (id, when) of each case it opened; None: the
        # ORM opened or changed a case, so this is not known any more
        self.opened: dict[str, list[tuple[int, datetime]]] | None = {}

    def queued(self, recipient: str | None, automatic: bool, at: datetime) -> None:
        key = address_key(recipient) if recipient else None
        if automatic and key in self.automatic:
            self.automatic[key].append(at)

    def automatic_count(self, recipient: str, since: datetime) -> int | None:
        times = self.automatic.get(recipient)
        if times is None or since < self.since:
            return None
        return sum(1 for at in times if at > since)

    def case_opened(self, case_id: int, email: str, at: datetime) -> None:
        if self.opened is None:
            return
        key = address_key(email)
        if key in self.opened and of_mailbox(email, key):
            self.opened[key].append((case_id, at))

    def opened_by(self, key: str, since: datetime) -> tuple[int, int | None] | None:
        """(count, latest id) of the cases `key`'s mailbox opened after `since`; None: not
        read ahead."""
        cases = self.opened.get(key) if self.opened is not None else None
        if cases is None or since < self.since:
            return None
        ids = [case_id for case_id, at in cases if at > since]
        return len(ids), max(ids, default=None)


def of_mailbox(email: str, key: str) -> bool:
    """Whether a case's address is of the mailbox `key` ("a@d"): "a@d" itself or "a+any@d", as
    writes' _OPENED_BY asks the database."""
    local, _, domain = key.partition("@")
    return email == key or (email.startswith(f"{local}+") and email.lower().endswith(f"@{domain}"))


def expect(
    session: Session, now: datetime, message_ids: Iterable[str], recipients: Iterable[str]
) -> None:
    """Read ahead what a batch about to be decided will look up: which of these Message-IDs
    are taken in, and the automatic mail queued to these recipients (lower-case) and the
    cases their mailboxes opened, lately."""
    session.flush()
    conn = session.connection()
    ahead = Ahead(now - WINDOW)
    ids = sorted(set(message_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        ahead.entries.update(dict.fromkeys(chunk))
        taken = conn.execute(
            select(TimelineEntry.message_id, TimelineEntry.ticket_id).where(
                TimelineEntry.message_id.in_(chunk)
            )
        )
        ahead.entries.update({m: t for m, t in taken if m is not None})
    addresses = sorted({address_key(r) for r in recipients})
    opened = cast(dict[str, list[tuple[int, datetime]]], ahead.opened)
    for start in range(0, len(addresses), 500):
        chunk = addresses[start : start + 500]
        for address in chunk:
            ahead.automatic[address] = []
            opened[address] = []
        queued = conn.execute(
            select(OutboxMessage.recipient_key, OutboxMessage.created_at).where(
                OutboxMessage.recipient_key.in_(chunk),
                OutboxMessage.automatic.is_(True),
                OutboxMessage.created_at > ahead.since,
            )
        )
        for key, at in queued:
            ahead.automatic[str(key)].append(at)
        _read_opened(conn, chunk, ahead)
    memo(session, _AHEAD)["read"] = ahead


def _read_opened(conn: Any, keys: list[str], ahead: Ahead) -> None:
    """The cases these mailboxes opened since ahead.since: their own address, and each
    sub-address range ("a+" up to "a,") that keeps to the address index. One prepared shape
    of OPENED_PER_READ mailboxes (the last repeated to fill it), so its SQL is built, compiled
    and planned once, not per batch."""
    for start in range(0, len(keys), OPENED_PER_READ):
        chunk = keys[start : start + OPENED_PER_READ]
        chunk += [chunk[-1]] * (OPENED_PER_READ - len(chunk))
        params: dict[str, Any] = {"since": ahead.since}
        for i, key in enumerate(chunk):
            local = key.partition("@")[0]
            params |= {f"e{i}": key, f"l{i}": f"{local}+", f"h{i}": f"{local},"}
        for case_id, address, at in deferred.read(conn, _READ_OPENED, params):
            ahead.case_opened(int(case_id), address, at)


OPENED_PER_READ = 50
_READ_OPENED = FastStatement(
    select(Ticket.id, Ticket.complainant_email, Ticket.created_at).where(
        or_(
            Ticket.complainant_email.in_([bindparam(f"e{i}") for i in range(OPENED_PER_READ)]),
            *[
                and_(
                    Ticket.complainant_email >= bindparam(f"l{i}"),
                    Ticket.complainant_email < bindparam(f"h{i}"),
                )
                for i in range(OPENED_PER_READ)
            ],
        ),
        # Through a function: SQLite's planner, offered fifty ORs and a range on the
        # creation-time index, took the range and read all of the day's cases per query
        # (21 ms per fifty mailboxes after 4,000 cases, growing with the day).
        func.coalesce(Ticket.created_at, Ticket.created_at)
        > bindparam("since", type_=Ticket.created_at.type),
    )
)


_AHEAD = "writes.ahead"


def current(session: Session) -> Ahead | None:
    """This transaction's read-ahead, or None (none read, or dropped since)."""
    found = peek(session, _AHEAD)
    return cast(Ahead | None, found.get("read")) if found else None


def forget(session: Session) -> None:
    drop(session, _AHEAD)


@event.listens_for(Session, "before_flush")
def _ahead_sees_the_flush(session: Session, _flush: UOWTransaction, _objects: Any) -> None:
    ahead = current(session)
    if ahead is None:
        return
    if changed_any(session, TimelineEntry) or changed_any(session, OutboxMessage):
        forget(session)
        return
    if any(isinstance(obj, Ticket | TimelineEntry | OutboxMessage) for obj in session.deleted):
        forget(session)
        return
    if any(_OPENED & state.committed_state.keys() for state in changed_of(session, Ticket)):
        ahead.opened = None  # an erased address, a case moved in time: ask the database
    for obj in session.new:
        if isinstance(obj, TimelineEntry) and obj.message_id is not None:
            if obj.ticket_id is None:  # set by the flush from a relationship: unknown here
                forget(session)
                return
            ahead.entries[obj.message_id] = obj.ticket_id
        elif isinstance(obj, OutboxMessage):
            automatic = True if obj.automatic is None else obj.automatic
            ahead.queued(obj.recipient, automatic, obj.created_at)
        elif isinstance(obj, Ticket):
            ahead.opened = None  # a case the ORM opens has no id yet: ask the database


_OPENED = {"complainant_email", "created_at"}


@event.listens_for(Session, "do_orm_execute")
def _ahead_drops_on_other_writes(state: ORMExecuteState) -> None:
    if not state.is_select:
        forget(state.session)
