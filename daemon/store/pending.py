"""What the ORM holds that the database has not seen, and a handler's scratch space for one
transaction: the write API (writes.py) and its read-ahead (ahead.py) both ask these.

- `memo`: what a handler worked out in this transaction; a rollback or commit forgets it.
- `new_rows`, `changed_of`, `changed_any`, `changed`, `pending`: the ORM's new and changed
  rows, so a look-up flushes only what could change its answer.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, SessionTransaction, UOWTransaction

from daemon.store.models import Base

# -- per-transaction memo --------------------------------------------------------------------


def memo(session: Session, name: str) -> dict[Any, Any]:
    """Scratch space for what a handler worked out in this transaction (e.g. a respondent
    found to be a group complaint). A rollback, a savepoint's included, forgets all of it:
    what it was worked out from may be gone."""
    memos: dict[str, dict[Any, Any]] = session.info.setdefault(_MEMO, {})
    return memos.setdefault(name, {})


_MEMO = "caseloop.memo"


def peek(session: Session, name: str) -> dict[Any, Any] | None:
    """The memo `name` of this transaction if it has one (none is made)."""
    memos: dict[str, dict[Any, Any]] | None = session.info.get(_MEMO)
    return memos.get(name) if memos else None


def drop(session: Session, name: str) -> None:
    """Forget the memo `name` of this transaction."""
    memos = session.info.get(_MEMO)
    if memos:
        memos.pop(name, None)


@event.listens_for(Session, "after_soft_rollback")
def _forget_memo(session: Session, _previous: SessionTransaction) -> None:
    session.info.pop(_MEMO, None)
    session.info.pop(_NEW, None)


@event.listens_for(Session, "after_commit")
def _memo_ends_with_transaction(session: Session) -> None:
    session.info.pop(_MEMO, None)


# -- the ORM's pending changes ---------------------------------------------------------------

_NEW = "caseloop.new"  # session.info: objects added since the last flush (maybe flushed since)


@event.listens_for(Session, "transient_to_pending")
def _note_new(session: Session, obj: Any) -> None:
    session.info.setdefault(_NEW, []).append(obj)


@event.listens_for(Session, "after_flush_postexec")
def _flushed(session: Session, _flush: UOWTransaction) -> None:
    session.info.pop(_NEW, None)


def added(session: Session) -> list[Any]:
    """Objects added to the session since the last flush (a few may have left it since)."""
    return list(session.info.get(_NEW, ()))


def new_rows(session: Session, model: type[Base]) -> list[Any]:
    """New `model` rows added since the last flush (a few may have left the session since:
    that only costs a flush)."""
    return [obj for obj in session.info.get(_NEW, ()) if type(obj) is model]


def changed_of(session: Session, model: type[Base]) -> list[Any]:
    # The ORM's own set of changed persistent objects (what Session.dirty is built from).
    return [s for s in session.identity_map._modified if s.class_ is model]  # noqa: SLF001


def changed_any(session: Session, model: type[Base]) -> bool:
    return any(s.class_ is model for s in session.identity_map._modified)  # noqa: SLF001


def changed(obj: Any) -> bool:
    return bool(inspect(obj).modified)


def pending(session: Session, model: type[Base]) -> bool:
    """Whether the ORM holds a new or changed row of `model`."""
    return bool(new_rows(session, model)) or changed_any(session, model)
