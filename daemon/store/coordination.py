"""Several instances on one database: leases, the instance registry and outbox claims.

PostgreSQL is the coordination engine; there is no cluster of our own. Three kinds of rows:

- a **lease** (table `leases`) says which instance works something that one instance at a
  time may work: a mailbox or form folder (`source:<name>`), a job (`job:retention`). The
  holder renews it while alive; once it has expired, any instance may take it over. A batch
  of intake renews its source's lease in its own transaction (`hold`): that UPDATE locks the
  row until the batch commits, so a takeover waits for the batch, and a batch whose lease was
  taken away meanwhile is rolled back instead of committed twice.
- an **instance** row (table `instances`) per running `run`/`run --once`, with a heartbeat:
  `caseloop status` lists the live ones, and the instances share the sources out fairly.
- an **outbox claim** (outbox.claimed_by/claimed_until): rows are claimed with SELECT ... FOR
  UPDATE SKIP LOCKED in a short transaction before they are sent, so no row is sent by two
  instances; a crashed holder's claim lapses and another instance sends the row.

Times are the instances' own clocks (keep them in sync with NTP): a lease lasts tens of
seconds, much longer than any skew NTP leaves.

On SQLite the same statements run (one instance only, see daemon/app.py's instance lock; a
`caseloop import` beside it takes its mailbox's lease like any other holder).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, or_, select, update
from sqlalchemy.orm import Session

from daemon.store import writes
from daemon.store.models import Instance, Lease, OutboxMessage

IMPORT_PREFIX = "import:"  # the holder id of a `caseloop import`: it outranks a live instance


def new_instance_id(kind: str = "") -> str:
    """A holder id, unique across hosts and restarts: [kind:]host:pid:random."""
    return f"{kind}{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


SOURCE_PREFIX = "source:"


def source_lease(name: str) -> str:
    return f"{SOURCE_PREFIX}{name}"


# -- leases ------------------------------------------------------------------------------------


def take(session: Session, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take (or renew) the lease `name` for `holder` until now + ttl: True when it is ours.

    It is ours when it is free, expired or already ours. An import (holder `import:...`) also
    takes a lease a live instance holds: the daemon's next batch on that source then finds it
    gone and rolls back (see `hold`), and its polls leave the source alone until the import
    releases it.
    """
    writes.insert_if_absent(
        session, Lease, ("name",), name=name, holder=None, expires_at=None, taken_at=None
    )
    free = or_(Lease.holder.is_(None), Lease.expires_at.is_(None), Lease.expires_at < now)
    if holder.startswith(IMPORT_PREFIX):
        free = or_(free, ~Lease.holder.startswith(IMPORT_PREFIX))
    taken = session.execute(
        update(Lease)
        .where(Lease.name == name, or_(Lease.holder == holder, free))
        .values(
            holder=holder,
            expires_at=now + ttl,
            taken_at=case((Lease.holder == holder, Lease.taken_at), else_=now),
        )
        .returning(Lease.name)
    ).first()
    return taken is not None


def hold(session: Session, name: str, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Renew a lease we hold, inside the transaction whose work it guards: False when it is no
    longer ours (expired and taken over, or taken by an import): the caller rolls back.

    The UPDATE locks the lease row until the transaction ends, so nobody takes the lease over
    while the work it guards is being committed."""
    found = session.execute(
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(expires_at=now + ttl)
        .returning(Lease.name)
    ).first()
    return found is not None


def release(session: Session, name: str, holder: str) -> None:
    """Give the lease up, if it is ours."""
    session.execute(
        update(Lease)
        .where(Lease.name == name, Lease.holder == holder)
        .values(holder=None, expires_at=None)
    )


def release_all(session: Session, holder: str) -> None:
    session.execute(
        update(Lease).where(Lease.holder == holder).values(holder=None, expires_at=None)
    )


def renew_all(session: Session, holder: str, now: datetime, ttl: timedelta) -> int:
    """Renew every unexpired lease `holder` holds (its heartbeat); how many."""
    result = session.execute(
        update(Lease)
        .where(Lease.holder == holder, Lease.expires_at >= now)
        .values(expires_at=now + ttl)
        .returning(Lease.name)
    )
    return len(result.all())


def once_per(session: Session, name: str, holder: str, now: datetime, every: timedelta) -> bool:
    """True for exactly one caller per `every` across instances (a job like the retention
    run): the lease `name` is taken for `every` and never released, so nobody, this instance
    included, takes it again before it expires."""
    writes.insert_if_absent(
        session, Lease, ("name",), name=name, holder=None, expires_at=None, taken_at=None
    )
    due = or_(Lease.expires_at.is_(None), Lease.expires_at <= now)
    found = session.execute(
        update(Lease)
        .where(Lease.name == name, due)
        .values(holder=holder, expires_at=now + every, taken_at=now)
        .returning(Lease.name)
    ).first()
    return found is not None


@dataclass(frozen=True)
class Held:
    name: str
    holder: str
    expires_at: datetime
    taken_at: datetime | None


def leases(session: Session, now: datetime) -> list[Held]:
    """The leases held now (unexpired), by name."""
    rows = session.execute(
        select(Lease.name, Lease.holder, Lease.expires_at, Lease.taken_at)
        .where(Lease.holder.is_not(None), Lease.expires_at >= now)
        .order_by(Lease.name)
    ).all()
    return [Held(n, h, e, t) for n, h, e, t in rows if h is not None and e is not None]


# -- the instance registry ---------------------------------------------------------------------


def register(session: Session, instance_id: str, mode: str, version: str, now: datetime) -> None:
    session.add(
        Instance(
            id=instance_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            mode=mode,
            version=version,
            started_at=now,
            heartbeat_at=now,
        )
    )


def beat(session: Session, instance_id: str, now: datetime) -> bool:
    """The heartbeat: this instance is alive now. False when its row is gone (another
    instance took it for dead, see reap_silent): it must register again."""
    found = session.execute(
        update(Instance)
        .where(Instance.id == instance_id)
        .values(heartbeat_at=now)
        .returning(Instance.id)
    ).first()
    return found is not None


def reap_silent(session: Session, now: datetime, silent_for: timedelta) -> list[str]:
    """Unregister the instances whose heartbeat stopped more than `silent_for` ago (killed,
    or their machine gone): their leases and outbox claims go to the living at once."""
    dead = list(
        session.scalars(select(Instance.id).where(Instance.heartbeat_at < now - silent_for))
    )
    for instance_id in dead:
        unregister(session, instance_id)
    return dead


def unregister(session: Session, instance_id: str) -> None:
    """An instance has ended (or is known dead): its row, leases and outbox claims go, so
    others take its work over at once instead of when its leases lapse."""
    session.execute(delete(Instance).where(Instance.id == instance_id))
    release_all(session, instance_id)
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.claimed_by == instance_id, OutboxMessage.status == "queued")
        .values(claimed_by=None, claimed_until=None)
    )


def reap(session: Session, *, only_instance: bool) -> list[str]:
    """Unregister the instances known to be dead; their ids. With `only_instance` (SQLite,
    whose file lock proves no other instance runs) that is every other instance row and every
    lease not held by an import; otherwise the instances on this host whose process is gone
    (host names are taken to be unique per machine or container)."""
    host = socket.gethostname()
    dead = []
    for instance_id, on, pid in session.execute(select(Instance.id, Instance.host, Instance.pid)):
        if only_instance or (on == host and not _process_exists(pid)):
            dead.append(instance_id)
    for instance_id in dead:
        unregister(session, instance_id)
    if only_instance:
        others = session.scalars(
            select(Lease.holder).where(
                Lease.holder.is_not(None), ~Lease.holder.startswith(IMPORT_PREFIX)
            )
        ).all()
        for holder in set(others):
            if holder is not None:
                unregister(session, holder)
                dead.append(holder)
    return dead


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def alive(session: Session, now: datetime, stale_after: timedelta) -> list[Instance]:
    """The instances whose heartbeat is fresher than `stale_after`."""
    return list(
        session.scalars(
            select(Instance)
            .where(Instance.heartbeat_at >= now - stale_after)
            .order_by(Instance.started_at)
        )
    )


# -- outbox claims -----------------------------------------------------------------------------


def _due(now: datetime, consumer_hours: bool) -> list[Any]:
    unclaimed = or_(OutboxMessage.claimed_until.is_(None), OutboxMessage.claimed_until < now)
    due = [OutboxMessage.status == "queued", OutboxMessage.next_attempt_at <= now, unclaimed]
    if not consumer_hours:
        due.append(OutboxMessage.consumer_hours.is_(False))
    return due


def outbox_due(session: Session, now: datetime, consumer_hours: bool = True) -> bool:
    """Whether any row could be claimed now (a read: no lock, no write)."""
    found = session.scalar(select(OutboxMessage.id).where(*_due(now, consumer_hours)).limit(1))
    return found is not None


def claim_outbox(
    session: Session,
    holder: str,
    now: datetime,
    until: datetime,
    limit: int,
    consumer_hours: bool = True,
) -> list[int]:
    """Claim up to `limit` queued rows that are due and not claimed by a live claim, oldest
    first; their ids. SKIP LOCKED: rows another instance is claiming right now are passed over,
    not waited for. Run it in a short transaction of its own. Outside the consumer's hours
    (`consumer_hours` False) the mail held to them waits."""
    ids = list(
        session.scalars(
            select(OutboxMessage.id)
            .where(*_due(now, consumer_hours))
            .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    )
    if ids:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(claimed_by=holder, claimed_until=until)
        )
    return ids


def unclaim(session: Session, holder: str, ids: Sequence[int]) -> None:
    """Give back claimed rows not sent (yet): another instance, or our next round, sends them."""
    if ids:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(list(ids)), OutboxMessage.claimed_by == holder)
            .values(claimed_by=None, claimed_until=None)
        )
