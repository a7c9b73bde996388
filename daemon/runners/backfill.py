"""The backfill runner (`caseloop import`): old mail taken in as of its own date, no mail sent,
and the claim that keeps the daemon's polls off a mailbox while an import reads it."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from daemon.clock import Clock
from daemon.config import Config
from daemon.items import Incoming
from daemon.prepare import Preparer
from daemon.runners.intake import IntakeRunner
from daemon.runners.source import PeekableSource, Source
from daemon.runners.summary import Summary
from daemon.store.models import SourceState
from handlers.context import Prepared

_HOLDER = f"{socket.gethostname()}:{os.getpid()}"


class ImportBusy(Exception):
    """Another `caseloop import` holds the mailbox."""


class HashOnly:
    """A blob writer that stores nothing: the sha256 a BlobStore would name the bytes by."""

    def put(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()


class ImportClaims:
    """Which mailboxes a `caseloop import` holds: one holder per mailbox, until a moment."""

    def __init__(
        self, clock: Clock, sessions: sessionmaker[Session], reads: sessionmaker[Session]
    ) -> None:
        self.clock, self.sessions, self.reads = clock, sessions, reads

    def claim(self, source: Source, until: datetime | None) -> None:
        """Hold (until a moment) or release (None) a mailbox for `caseloop import`: while it
        is held, the daemon's polls leave that mailbox alone (one holder per mailbox).

        Raises ImportBusy when another import holds it. The claim is renewed every batch and
        lapses by itself if the import dies.
        """
        with self.sessions.begin() as session:
            state = session.get(SourceState, source.name, with_for_update=True)
            if state is None:
                state = SourceState(source=source.name, state={})
                session.add(state)
            held = state.state.get("import_until")
            now = self.clock.now()
            other = state.state.get("import_by") != _HOLDER
            if held and datetime.fromisoformat(held) > now and other:
                if until is None:
                    return  # not ours to release
                raise ImportBusy(f"an import of {source.name} is running (until {held})")
            others = {k: v for k, v in state.state.items() if not k.startswith("import_")}
            state.state = others if until is None else {
                **others, "import_until": until.isoformat(), "import_by": _HOLDER
            }  # fmt: skip

    def held(self, source: Source) -> bool:
        """A `caseloop import` holds this mailbox (see claim)."""
        with self.reads() as session:
            state = session.get(SourceState, source.name)
        held = state.state.get("import_until") if state is not None else None
        return bool(held) and datetime.fromisoformat(str(held)) > self.clock.now()


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
            self.intake.take_in(source, prepared, settled, summary)
        return summary
