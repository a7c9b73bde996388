"""The backfill runner (`caseloop import`): old mail taken in as of its own date, no mail sent,
and the claim that keeps the daemon's polls off a mailbox while an import reads it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from daemon.clock import Clock
from daemon.config import Config
from daemon.items import Incoming
from daemon.prepare import Preparer
from daemon.runners.intake import IntakeRunner
from daemon.runners.source import PeekableSource, Source
from daemon.runners.summary import Summary
from daemon.store import coordination
from daemon.store.models import Lease
from handlers.context import Prepared

IMPORT_CLAIM = timedelta(minutes=10)  # renewed every batch; lapses if the import dies


class ImportBusy(Exception):
    """Another `caseloop import` holds the mailbox."""


class HashOnly:
    """A blob writer that stores nothing: the sha256 a BlobStore would name the bytes by."""

    def put(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()


class ImportClaims:
    """The mailboxes a `caseloop import` holds: their leases (daemon/store/coordination.py),
    taken by the import's own holder id, which outranks a live instance's."""

    def __init__(self, clock: Clock, sessions: sessionmaker[Session]) -> None:
        self.clock, self.sessions = clock, sessions
        self.holder = coordination.new_instance_id(coordination.IMPORT_PREFIX)

    def claim(self, source: Source, until: datetime | None) -> None:
        """Hold (until a moment) or release (None) a mailbox for `caseloop import`: while it
        is held, the daemon's polls leave that mailbox alone, and a batch the daemon is
        deciding when the import takes it is rolled back (one holder per mailbox).

        Raises ImportBusy when another import holds it. The claim is renewed every batch and
        lapses by itself if the import dies.
        """
        name = coordination.source_lease(source.name)
        now = self.clock.now()
        with self.sessions.begin() as session:
            if until is None:
                coordination.release(session, name, self.holder)
                return
            if not coordination.take(session, name, self.holder, now, until - now):
                held = session.get(Lease, name)
                till = held.expires_at.isoformat() if held and held.expires_at else "?"
                raise ImportBusy(f"an import of {source.name} is running (until {till})")

    def held(self, source: Source) -> bool:
        """A `caseloop import` holds this mailbox (see claim)."""
        with self.sessions() as session:
            return any(
                h.name == coordination.source_lease(source.name)
                and h.holder.startswith(coordination.IMPORT_PREFIX)
                for h in coordination.leases(session, self.clock.now())
            )


@dataclass
class ImportJob:
    """One `caseloop import`: the mailbox, the dates it takes, and where it has read to."""

    source: PeekableSource
    since: datetime
    until: datetime
    dry_run: bool
    after: str | None = None  # the last key read; None before the first batch
    done: bool = False  # the mailbox has no more


class BackfillRunner:
    """Reads a mailbox through in batches for `caseloop import` (SPEC §2)."""

    def __init__(self, config: Config, intake: IntakeRunner, claims: ImportClaims) -> None:
        self.config, self.intake, self.claims = config, intake, claims
        self.dry_preparer = Preparer(config, HashOnly())

    def run_once(self, job: ImportJob) -> Summary:
        """One batch of the import, old mail taken in as of its own date, with no mail sent
        (handlers/pipeline.py BACKFILL_DECIDE, no SLA clocks on the cases).

        The import reads on through the mailbox from `job.after` (the last key of the
        previous batch), so what it leaves does not come back to it:
        - mail dated from `since` up to `until` (when the import began) is taken in;
        - mail dated before `since`, or with no date, is settled as "skipped": moved on like
          processed mail, never taken in, its attachments not kept;
        - mail dated after `until` is left where it is: it may be live mail, the daemon's.
        Each batch commits and settles, so an interrupted import resumes where it stopped.
        A dry run takes and keeps nothing and says what would happen, without deciding.
        Moves `job.after` on, or sets `job.done` when the mailbox has no more.
        """
        summary = Summary()
        source, since, until = job.source, job.since, job.until
        if not job.dry_run:  # the daemon leaves the mailbox alone meanwhile (ImportBusy)
            self.claims.claim(source, self.claims.clock.now() + IMPORT_CLAIM)
        items = source.peek(self.config.intake.batch_size, job.after)
        if not items:
            job.done = True
            return summary
        job.after = items[-1].key
        settled, fresh = self.intake.split_known(source, items, summary)
        # First read without storing attachments; only mail taken in is read again to keep them.
        looked = self.dry_preparer.prepare_all(fresh)
        take: list[Incoming] = []
        prepared: list[Prepared] = []
        zone = self.config.timezone
        for prep in looked:
            date = prep.message.date if prep.message is not None else None
            if prep.stopped:
                prepared.append(prep)
            elif date is None:
                prep.stop("skipped", "no date: not known to be from --since on")
                prepared.append(prep)
            elif date < since:
                prep.stop("skipped", f"dated {date.astimezone(zone):%Y-%m-%d}, before --since "
                                     f"{since.astimezone(zone):%Y-%m-%d}")  # fmt: skip
                prepared.append(prep)
            elif date > until:
                summary.outcomes["left"] += 1  # newer than the import: the daemon's to take
            else:
                take.append(prep.item)
        if not job.dry_run:
            prepared += self.intake.preparer.prepare_all(take)
        for prep in prepared:
            prep.backfill = True
            prep.fields["imported"] = True  # on the case it opens: staff see it came by import
        # In date order within a batch, so an original comes before the replies to it.
        prepared.sort(key=lambda p: p.message.date if p.message and p.message.date else until)
        if job.dry_run:
            summary.outcomes["would_take_in"] += len(take)
            for prep in prepared:
                summary.outcomes[prep.outcome] += 1
                if prep.outcome in ("quarantined", "ignored"):
                    summary.keep("set_aside", [(prep.item.source, prep.item.label, prep.outcome,
                                                prep.reason or "")])  # fmt: skip
        else:
            self.intake.take_in(source, prepared, settled, summary, holder=self.claims.holder)
        return summary
