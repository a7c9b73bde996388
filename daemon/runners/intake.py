"""The intake runner: poll each source, decide a batch in one transaction, settle it after."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from daemon import log as logfmt
from daemon.clock import Clock
from daemon.config import Config
from daemon.items import Incoming
from daemon.prepare import Preparer
from daemon.runners.shares import Shares
from daemon.runners.source import Source, peekable, waits
from daemon.runners.summary import Summary
from daemon.store import writes
from daemon.store.blobs import BlobStore
from daemon.store.models import SourceItem, SourceState
from handlers import pipeline
from handlers.context import Context, Prepared, Services

log = logging.getLogger("caseloop")


def as_of(prep: Prepared, now: datetime) -> datetime:
    """When an item is taken in: now, or for a backfill its own date (never in the future),
    so an imported case is numbered, dated and counted when the consumer wrote."""
    date = prep.message.date if prep.backfill and prep.message is not None else None
    return min(date, now) if date is not None else now


class _LeaseLost(Exception):
    """The source's lease went to another holder: this batch is theirs to take in."""


class _ItemFailed(Exception):
    """One item of a batch raised; the batch is redone item by item."""


class IntakeRunner:
    """Takes in what the sources hold: one transaction per batch, one bad item set aside."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        sources: list[Source],
        sessions: sessionmaker[Session],
        reads: sessionmaker[Session],
        blobs: BlobStore,
        services: Services,
        *,
        stop: threading.Event,
        shares: Shares,
    ) -> None:
        self.config, self.clock, self.sources = config, clock, sources
        self.sessions, self.reads = sessions, reads
        self.services = services
        self.preparer = Preparer(config, blobs, aside=config.intake.prepare_aside)
        self.stop = stop
        self.shares = shares  # which sources this instance works (runners/shares.py)

    def run_once(self, sources: list[Source] | None = None) -> Summary:
        """One batch from each source (or these); a broken source does not stop the others."""
        summary = Summary()
        for source in self.sources if sources is None else sources:
            if self.stop.is_set():
                break
            try:
                summary.add(self.poll(source))
            except Exception as exc:  # a broken source must not stop the others
                log.exception("event=source.error source=%s", source.name)
                self.record_poll(source, f"{type(exc).__name__}: {exc}")
        return summary

    def poll(self, source: Source) -> Summary:
        """Take in one batch from a source in one transaction; one bad message is set aside."""
        summary = Summary()
        if not self.shares.take(source):  # another instance, or `caseloop import`, has it
            return summary
        self._polling(source)
        items = source.fetch(self.config.intake.batch_size)
        if not items:
            self.record_poll(source, getattr(source, "last_error", None))
            return summary
        settled, fresh = self.split_known(source, items, summary)
        # Parse outside the transaction, so the database is locked only while deciding.
        read_ahead = self.preparer.pending(source.name)  # this batch, if it was read ahead
        self._read_ahead(source, items)  # the next one, prepared aside while this one is
        prepared = self.preparer.take(read_ahead, fresh)
        self.take_in(source, prepared, settled, summary)
        self.record_poll(source, getattr(source, "last_error", None))
        return summary

    def _read_ahead(self, source: Source, items: list[Incoming]) -> None:
        """A full batch means more is waiting: the worker prepares the next batch (read, not
        taken) while this one is decided (daemon/prepare.py)."""
        if not self.preparer.aside or len(items) < self.config.intake.batch_size:
            return
        if not peekable(source) or self.stop.is_set():
            return
        try:
            following = source.peek(self.config.intake.batch_size, items[-1].key)
            self.preparer.ahead(source.name, following)
        except Exception as exc:  # reading ahead only saves time: the next poll reads anyway
            logfmt.event(log, "intake.read_ahead_failed", logging.WARNING, source=source.name,
                         error=f"{type(exc).__name__}: {exc}")  # fmt: skip

    def take_in(
        self,
        source: Source,
        prepared: list[Prepared],
        settled: list[tuple[Incoming, str]],
        summary: Summary,
        holder: str | None = None,
    ) -> None:
        """Decide the prepared items in one transaction, then settle the batch at the source.

        The transaction first renews the source's lease for `holder` (this instance, or an
        import): when the lease was lost meanwhile, the batch is rolled back and nothing is
        settled; the new holder takes the same items in."""
        results: list[Context] = []
        lease = (source, holder)
        try:
            if prepared:
                try:
                    results = self._decide_batch(prepared, lease, isolate=False)
                except _ItemFailed:
                    # One message raised and the batch rolled back: redo it with a savepoint
                    # per message, so that one is set aside and its neighbours are kept.
                    results = self._decide_batch(prepared, lease, isolate=True)
        except _LeaseLost:
            logfmt.event(log, "intake.lease_lost", logging.WARNING, source=source.name,
                         items=len(prepared) + len(settled))  # fmt: skip
            return
        for ctx in results:
            settled.append((ctx.prep.item, ctx.prep.outcome))
            _summarise(summary, ctx)
        source.settle_batch(settled)

    def split_known(
        self, source: Source, items: list[Incoming], summary: Summary
    ) -> tuple[list[tuple[Incoming, str]], list[Incoming]]:
        """The items taken in before, with their outcomes (a crash came between commit and
        settle: they are only settled), and the fresh ones. The known ones count as progress
        in the summary: a cumulative export's repeated rows can fill whole batches, and run
        --once or a tick must not stop draining at such a batch."""
        with self.reads() as session:
            known = dict(
                session.execute(
                    select(SourceItem.key, SourceItem.outcome).where(
                        SourceItem.source == source.name,
                        SourceItem.key.in_([i.key for i in items]),
                    )
                ).all()
            )
        settled = [(i, known[i.key]) for i in items if i.key in known]
        summary.outcomes["known"] += len(settled)
        return settled, [i for i in items if i.key not in known]

    def _decide_batch(
        self, prepared: list[Prepared], lease: tuple[Source, str | None], *, isolate: bool
    ) -> list[Context]:
        """Decide every prepared item in one transaction.

        The fast path (isolate=False) spends no savepoints and raises _ItemFailed, rolling the
        whole batch back, when any item fails; isolate=True gives each item a savepoint.
        """
        now = self.clock.now()  # one moment for the batch: it commits as one
        items: list[dict[str, Any]] = []  # the batch's source_items rows, written together
        with self.sessions.begin() as session:
            if not self.shares.hold(session, *lease):
                raise _LeaseLost  # rolls the transaction back: it did nothing yet
            if not isolate:
                _read_ahead(session, prepared, now)
            decided = [
                self._decide(
                    session, replace(prep, notes=list(prep.notes)), isolate, items, as_of(prep, now)
                )
                for prep in prepared
            ]
            try:
                writes.record_items(session, items)
            except DBAPIError as exc:
                # The write API may send the items' writes only here (writes.py): an error in
                # one of them is an item's error, found without knowing which item's.
                if isolate:
                    raise
                raise _ItemFailed from exc
        return decided

    def _decide(
        self, session: Session, prep: Prepared, isolate: bool, items: list[Any], now: datetime
    ) -> Context:
        ctx = Context(prep=prep, services=self.services, session=session, clock=self.clock, now=now)
        if not isolate:
            try:
                if not prep.stopped:
                    pipeline.decide(ctx)
            except Exception as exc:
                raise _ItemFailed from exc
            items.append(_item_row(ctx))
            return ctx
        savepoint = session.begin_nested()
        try:
            if not prep.stopped:
                pipeline.decide(ctx)
            savepoint.commit()
        except Exception as exc:  # bad input never stops the queue: set it aside for a human
            savepoint.rollback()  # ... and what its steps worked out (writes.memo) goes with it
            log.exception("event=intake.error source=%s item=%s", prep.item.source, prep.item.label)
            ctx.ticket = None
            prep.stop(
                "quarantined", f"internal error while processing: {type(exc).__name__}: {exc}"
            )
        items.append(_item_row(ctx))
        return ctx

    def _polling(self, source: Source) -> None:
        """A poll starts: status shows a source whose poll goes on too long as stalled (a
        server that stopped answering), without asking the server itself."""
        with self.sessions.begin() as session:
            state = session.get(SourceState, source.name)
            if state is None:
                state = SourceState(source=source.name, state={})
                session.add(state)
            state.state = {**state.state, "polling_since": self.clock.now().isoformat()}

    def record_poll(self, source: Source, error: str | None) -> None:
        """What `caseloop status` shows of a source, recorded as the daemon works (status
        itself never opens a connection): when it was last polled, whether that poll failed
        and why, and how much was waiting after it."""
        try:
            backlog: int | None = source.backlog()
        except Exception:  # noqa: BLE001 - a count for status; the poll's error is recorded
            backlog = None
        now = self.clock.now()
        with self.sessions.begin() as session:
            state = session.get(SourceState, source.name)
            if state is None:
                state = SourceState(source=source.name, state={})
                session.add(state)
            state.last_poll_at = now
            others = {k: v for k, v in state.state.items() if k != "polling_since"}
            state.state = {**others, "backlog": backlog, "failing": error is not None}
            if waits(source):
                # Its thread waits (IDLE, or a sleep) at most a poll interval before the next
                # poll: a wait that outlasts it (a DONE the frozen server never answers) shows.
                interval = self.config.intake.poll_interval.as_timedelta()
                state.state = {**state.state, "next_poll_by": (now + interval).isoformat()}
            if error is not None:
                state.last_error, state.last_error_at = error, now


def _read_ahead(session: Session, prepared: list[Prepared], now: datetime) -> None:
    """What the batch's look-ups will ask, read in one query each (writes.expect)."""
    messages = [p.message for p in prepared if p.message is not None and not p.stopped]
    writes.expect(
        session,
        now,
        [m.message_id for m in messages if m.message_id],
        [m.from_address.lower() for m in messages],
    )


def _item_row(ctx: Context) -> dict[str, Any]:
    """The source_items row of a decided item: its dedupe key and what became of it."""
    prep = ctx.prep
    return dict(
        source=prep.item.source,
        key=prep.item.key,
        outcome=prep.outcome,
        reason=prep.reason,
        ticket_id=ctx.ticket.id if ctx.ticket is not None else None,
        raw_sha256=prep.raw_sha256,
        # The original as received, kept for staff and audits (a duplicate's is there
        # already; oversized mail stays in the source's quarantine only).
        # Mail an import skipped (before --since) is not kept: it was never taken in.
        raw=None
        if prep.outcome in ("duplicate", "skipped") or prep.raw_sha256 is None
        else prep.item.raw,
        at=ctx.now,
    )


def _summarise(summary: Summary, ctx: Context) -> None:
    prep = ctx.prep
    summary.outcomes[prep.outcome] += 1
    item = prep.item
    summary.keep("notes", prep.notes)
    for note in prep.notes:
        logfmt.event(log, "intake.note", source=item.source, item=item.label, note=note)
    if prep.outcome in ("quarantined", "ignored"):
        summary.keep("set_aside", [(item.source, item.label, prep.outcome, prep.reason or "")])
        logfmt.event(
            log,
            f"intake.{prep.outcome}",
            logging.WARNING,
            source=item.source,
            item=item.label,
            reason=prep.reason,
        )
        return
    number = ctx.ticket.number if ctx.ticket is not None else None
    if prep.outcome == "ticket" and number:
        summary.keep("opened", [number])
    logfmt.event(
        log,
        f"intake.{prep.outcome}",
        source=item.source,
        item=item.label,
        ticket=number,
        sender=logfmt.mask(prep.message.from_address if prep.message else None),
        automatic=prep.automatic,
    )
