"""Builds sources, pipeline, sender and scheduler from a Config; `run` and `run --once`."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import FrameType
from typing import Any, Protocol, TypeGuard

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon import log as logfmt
from daemon.clock import Clock, SystemClock, WorkCalendar
from daemon.config import Config
from daemon.items import Incoming
from daemon.prepare import Preparer
from daemon.sender import make_transport, send_due
from daemon.sources.forms import FormSource
from daemon.sources.imap import ImapSource
from daemon.sources.maildir import MaildirSource
from daemon.store import writes
from daemon.store.blobs import BlobStore
from daemon.store.db import make_engine, migrate, needs_migration, session_factory
from daemon.store.models import SourceItem, SourceState
from handlers import digest, pipeline, privacy, sla, survey
from handlers.context import Context, Prepared, Services
from handlers.notify import Templates

log = logging.getLogger("caseloop")


def _deliver_until(
    app: App,
    intake_done: Any,
    report: Callable[[Summary], None],
    orphaned: Callable[[], bool] = lambda: False,
) -> None:
    """Deliver until intake is done (or its process is gone) and nothing is left to send."""
    while True:
        finished = intake_done.is_set() or orphaned()  # read before sending: none left behind
        summary = app.send_outbox()
        report(summary)
        if finished and summary.sent == 0:
            return
        if summary.sent == 0:
            intake_done.wait(0.05)


def _deliver_aside(config: Config, log_level: int, intake_done: Any, results: Any) -> None:
    """The delivery process of run --once (see App._run_once_delivering_aside)."""
    logfmt.setup(logging.getLevelName(log_level))
    app = App(config)
    total = Summary()
    try:
        parent = multiprocessing.parent_process()
        # If intake's process is killed, deliver what is due and end: never linger.
        _deliver_until(
            app,
            intake_done,
            total.add,
            orphaned=lambda: parent is not None and not parent.is_alive(),
        )
    finally:
        app.close()
        results.put((total.sent, total.not_sent))


class HashOnly:
    """A blob writer that stores nothing: the sha256 a BlobStore would name the bytes by."""

    def put(self, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()


def as_of(prep: Prepared, now: datetime) -> datetime:
    """When an item is taken in: now, or for a backfill its own date (never in the future),
    so an imported case is numbered, dated and counted when the consumer wrote."""
    date = prep.message.date if prep.backfill and prep.message is not None else None
    return min(date, now) if date is not None else now


RETENTION_EVERY = timedelta(hours=1)


class ImportBusy(Exception):
    """Another `caseloop import` holds the mailbox."""


_HOLDER = f"{socket.gethostname()}:{os.getpid()}"


class _ItemFailed(Exception):
    """One item of a batch raised; the batch is redone item by item."""


class Source(Protocol):
    name: str

    def fetch(self, limit: int) -> list[Incoming]: ...
    def settle_batch(self, settled: list[tuple[Incoming, str]]) -> None: ...
    def describe(self) -> str: ...
    def check(self) -> str: ...
    def backlog(self) -> int: ...


class PeekableSource(Source, Protocol):
    """A mailbox `caseloop import` can read on through without taking (a dry run)."""

    def peek(self, limit: int, after: str | None) -> list[Incoming]: ...


class WaitingSource(Source, Protocol):
    """A source that can block until the server announces mail (IMAP IDLE): it gets a thread."""

    def wait_for_mail(self, timeout: float) -> bool: ...
    def wake(self) -> None: ...
    def close(self) -> None: ...


def waits(source: Source) -> TypeGuard[WaitingSource]:
    return hasattr(source, "wait_for_mail")


@dataclass
class Summary:
    """What a run did, for the operator: counts by outcome, the cases opened, the items set
    aside and the notes. Lists keep their first DETAILS entries, so a run over a 200,000-row
    export does not hold (or print) one line per row; `left_out` counts the rest, and every
    item set aside and every note is in the log as it happens."""

    DETAILS = 50

    outcomes: Counter[str] = field(default_factory=Counter)
    set_aside: list[tuple[str, str, str, str]] = field(default_factory=list)  # src, item, how, why
    opened: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)  # "set_aside", "opened", "notes"
    sent: int = 0
    not_sent: int = 0
    swept: int = 0  # clock steps taken: reminders, escalations, surveys, digests

    def keep(self, kind: str, entries: list[Any]) -> None:
        """Add entries to the list `kind`, up to DETAILS; count the ones left out."""
        kept: list[Any] = getattr(self, kind)
        room = max(0, self.DETAILS - len(kept))
        kept += entries[:room]
        self.left_out[kind] += len(entries) - len(entries[:room])

    def add(self, other: Summary) -> None:
        self.outcomes.update(other.outcomes)
        for kind in ("set_aside", "opened", "notes"):
            self.keep(kind, getattr(other, kind))
        self.left_out.update(other.left_out)
        self.sent += other.sent
        self.not_sent += other.not_sent
        self.swept += other.swept

    @property
    def work_done(self) -> int:
        return sum(self.outcomes.values()) + self.sent + self.swept


def build_sources(config: Config) -> list[Source]:
    sources: list[Source] = []
    for box in config.mailboxes:
        if box.type == "maildir":
            assert box.path is not None and box.quarantine_path is not None
            sources.append(MaildirSource(box.name, box.path, box.quarantine_path))
        elif box.type == "imap":
            sources.append(ImapSource(box))
    sources += [FormSource(form) for form in config.forms]
    return sources


class App:
    """One caseloop instance: database, sources, handlers and sender wired from a Config."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.engine = make_engine(config.database_url)
        if self.engine.dialect.name == "sqlite" and needs_migration(self.engine):
            migrate(self.engine)  # the embedded default migrates itself on start
        self.sessions = session_factory(self.engine)
        self.reads = session_factory(self.engine, read_only=True)
        self.try_writes = session_factory(self.engine, nowait=True)
        self.calendar = WorkCalendar(
            config.sla.calendar, config.timezone, config.sla.business_hours
        )
        self.templates = Templates(config)
        self.services = pipeline.services(config, self.calendar, self.templates)
        self.blobs = BlobStore(config.blobs_dir)
        self.preparer = Preparer(config, self.blobs)
        self.dry_preparer = Preparer(config, HashOnly())
        self.sources = build_sources(config)
        self.transport = make_transport(config)
        self._stop = threading.Event()
        self._send_lock = threading.Lock()  # the outbox job and the IDLE threads both deliver
        self._sweep_lock = threading.Lock()  # the sweep and digest jobs share the clock steps
        self._retention_due: datetime | None = None  # see _retention

    def close(self) -> None:
        for source in self.sources:
            if waits(source):
                source.close()
        self.engine.dispose()

    # -- intake ---------------------------------------------------------------------------

    def poll(self, source: Source) -> Summary:
        """Take in one batch from a source in one transaction; one bad message is set aside."""
        summary = Summary()
        if self._importing(source):  # `caseloop import` has it: its mail is not live mail
            return summary
        items = source.fetch(self.config.intake.batch_size)
        if not items:
            self._record_poll(source, getattr(source, "last_error", None))
            return summary
        known = self._known(source, items)
        # Already committed (a crash came between commit and settle): only settle them.
        settled: list[tuple[Incoming, str]] = [(i, known[i.key]) for i in items if i.key in known]
        # Settling them is progress too: a cumulative export's repeated rows can fill whole
        # batches, and run --once / a tick must not stop draining at such a batch.
        summary.outcomes["known"] += len(settled)
        fresh = [i for i in items if i.key not in known]
        # Parse outside the transaction, so the database is locked only while deciding.
        prepared = self.preparer.prepare_all(fresh) if fresh else []
        self._take_in(source, prepared, settled, summary)
        self._record_poll(source, getattr(source, "last_error", None))
        return summary

    def _take_in(
        self,
        source: Source,
        prepared: list[Prepared],
        settled: list[tuple[Incoming, str]],
        summary: Summary,
    ) -> None:
        """Decide the prepared items in one transaction, then settle the batch at the source."""
        results: list[Context] = []
        if prepared:
            try:
                results = self._decide_batch(prepared, isolate=False)
            except _ItemFailed:
                # One message raised and the batch rolled back: redo it with a savepoint per
                # message, so that one is set aside and its neighbours are kept.
                results = self._decide_batch(prepared, isolate=True)
        for ctx in results:
            settled.append((ctx.prep.item, ctx.prep.outcome))
            self._summarise(summary, ctx)
        source.settle_batch(settled)

    def _known(self, source: Source, items: list[Incoming]) -> dict[str, str]:
        """Of these items, the ones taken in before: their outcomes by key."""
        with self.reads() as session:
            return dict(
                session.execute(
                    select(SourceItem.key, SourceItem.outcome).where(
                        SourceItem.source == source.name,
                        SourceItem.key.in_([i.key for i in items]),
                    )
                ).all()
            )

    def import_batch(
        self,
        source: PeekableSource,
        since: datetime,
        until: datetime,
        *,
        dry_run: bool,
        after: str | None = None,
    ) -> tuple[Summary, str | None]:
        """One batch of `caseloop import` (SPEC §2): old mail taken in as of its own date,
        with no mail sent (decide_steps(backfill=True), no SLA clocks on the cases).

        The import reads on through the mailbox from `after` (the last key of the previous
        batch), so what it leaves does not come back to it:
        - mail dated from `since` up to `until` (when the import began) is taken in;
        - mail dated before `since`, or with no date, is settled as "skipped": moved on like
          processed mail, never taken in, its attachments not kept;
        - mail dated after `until` is left where it is: it may be live mail, the daemon's.
        Each batch commits and settles, so an interrupted import resumes where it stopped.
        A dry run takes and keeps nothing and says what would happen, without deciding.
        Returns the summary and the key to read on from (None when the mailbox has no more).
        """
        summary = Summary()
        items = source.peek(self.config.intake.batch_size, after)
        if not items:
            return summary, None
        known = self._known(source, items)
        settled: list[tuple[Incoming, str]] = [(i, known[i.key]) for i in items if i.key in known]
        summary.outcomes["known"] += len(settled)
        # First read without storing attachments; only mail taken in is read again to keep them.
        looked = self.dry_preparer.prepare_all([i for i in items if i.key not in known])
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
        if not dry_run:
            prepared += self.preparer.prepare_all(take)
        for prep in prepared:
            prep.backfill = True
            prep.fields["imported"] = True  # on the case it opens: staff see it came by import
        # In date order within a batch, so an original comes before the replies to it.
        prepared.sort(key=lambda p: p.message.date if p.message and p.message.date else until)
        if dry_run:
            summary.outcomes["would_take_in"] += len(take)
            for prep in prepared:
                summary.outcomes[prep.outcome] += 1
                if prep.outcome in ("quarantined", "ignored"):
                    summary.keep("set_aside", [(prep.item.source, prep.item.label, prep.outcome,
                                                prep.reason or "")])  # fmt: skip
        else:
            self._take_in(source, prepared, settled, summary)
        return summary, items[-1].key

    def claim_import(self, source: Source, until: datetime | None) -> None:
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

    def _importing(self, source: Source) -> bool:
        """A `caseloop import` holds this mailbox (see claim_import)."""
        with self.reads() as session:
            state = session.get(SourceState, source.name)
        held = state.state.get("import_until") if state is not None else None
        return bool(held) and datetime.fromisoformat(str(held)) > self.clock.now()

    def _decide_batch(self, prepared: list[Prepared], *, isolate: bool) -> list[Context]:
        """Decide every prepared item in one transaction.

        The fast path (isolate=False) spends no savepoints and raises _ItemFailed, rolling the
        whole batch back, when any item fails; isolate=True gives each item a savepoint.
        """
        now = self.clock.now()  # one moment for the batch: it commits as one
        items: list[dict[str, Any]] = []  # the batch's source_items rows, written together
        with self.sessions.begin() as session:
            decided = [
                self._decide(
                    session, replace(prep, notes=list(prep.notes)), isolate, items, as_of(prep, now)
                )
                for prep in prepared
            ]
            writes.record_items(session, items)
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
            items.append(self._item_row(ctx))
            return ctx
        savepoint = session.begin_nested()
        try:
            if not prep.stopped:
                pipeline.decide(ctx)
            savepoint.commit()
        except Exception as exc:  # bad input never stops the queue: set it aside for a human
            savepoint.rollback()
            log.exception("event=intake.error source=%s item=%s", prep.item.source, prep.item.label)
            ctx.ticket = None
            prep.stop(
                "quarantined", f"internal error while processing: {type(exc).__name__}: {exc}"
            )
        items.append(self._item_row(ctx))
        return ctx

    def _item_row(self, ctx: Context) -> dict[str, Any]:
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

    def _summarise(self, summary: Summary, ctx: Context) -> None:
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

    def _record_poll(self, source: Source, error: str | None) -> None:
        now = self.clock.now()
        with self.sessions.begin() as session:
            state = session.get(SourceState, source.name)
            if state is None:
                state = SourceState(source=source.name, state={})
                session.add(state)
            state.last_poll_at = now
            if error is not None:
                state.last_error, state.last_error_at = error, now

    def poll_all(self, sources: list[Source] | None = None) -> Summary:
        summary = Summary()
        for source in self.sources if sources is None else sources:
            if self._stop.is_set():
                break
            try:
                summary.add(self.poll(source))
            except Exception as exc:  # a broken source must not stop the others
                log.exception("event=source.error source=%s", source.name)
                self._record_poll(source, f"{type(exc).__name__}: {exc}")
        return summary

    # -- clocks ---------------------------------------------------------------------------

    def sweep(self) -> Summary:
        """The clock jobs: SLA reminders and escalations, surveys due or expired, the digest.

        Each runs in its own transaction, so one failing does not hold back the others.
        """
        summary = Summary()
        with self._sweep_lock:
            self._sweep_jobs(summary)
        return summary

    def _sweep_jobs(self, summary: Summary) -> None:
        jobs: list[tuple[str, Callable[[Session, Services, datetime], int]]] = [
            ("sla", sla.sweep),
            ("survey", survey.sweep),
            ("digest", digest.scheduled),
        ]
        for name, job in jobs:
            if self._stop.is_set():
                break
            try:
                with self.sessions.begin() as session:
                    taken = job(session, self.services, self.clock.now())
            except Exception:  # a broken clock job must not stop intake or the others
                log.exception("event=sweep.error job=%s", name)
                continue
            if taken:
                logfmt.event(log, "sweep.done", job=name, steps=taken)
            summary.swept += taken
        if not self._stop.is_set():
            self._retention(summary)

    def _retention(self, summary: Summary) -> None:
        """[privacy] retain_closed: personal data of long-closed cases erased; then the files
        of erased attachments go, once that is committed.

        Once an hour at most: retention counts in days and the file grace is an hour, so each
        sweep (every minute, every round of run --once) need not scan for it again."""
        now = self.clock.now()
        if self._retention_due is not None and now < self._retention_due:
            return
        self._retention_due = now + RETENTION_EVERY
        try:
            with self.sessions.begin() as session:
                done = privacy.retention_sweep(session, self.config, now)
            with self.sessions.begin() as session:
                deleted, _waiting = privacy.collect_files(session, self.blobs)
        except Exception:  # like the other clock jobs: logged, and the next run tries again
            log.exception("event=sweep.error job=retention")
            return
        if done.cases or deleted:
            logfmt.event(
                log,
                "sweep.done",
                job="retention",
                steps=len(done.cases),
                files=deleted,
                kept_by_sources=len(done.kept_by_sources),
            )
        summary.swept += len(done.cases)

    # -- delivery -------------------------------------------------------------------------

    def send_outbox(self) -> Summary:
        summary = Summary()
        with self._send_lock:
            summary.sent, summary.not_sent = send_due(
                self.sessions,
                self.reads,
                self.transport,
                self.clock,
                self.config.support_address,
                try_sessions=self.try_writes,
            )
        if summary.sent or summary.not_sent:
            logfmt.event(
                log,
                "outbox.delivered",
                sent=summary.sent,
                not_sent=summary.not_sent,
                transport=self.transport.describe(),
            )
        return summary

    # -- running --------------------------------------------------------------------------

    def run_once(self) -> Summary:
        """Every job until no work is left (SPEC §2 `run --once`).

        When the transport waits on a server (SMTP), delivery runs beside intake, so mail goes
        out while the next batch is fetched and decided: in a process of its own (its own GIL),
        or in a thread when a test drives a movable clock a child process could not share.
        A Maildir outbox is written in turn, unless the backlog is long (see _run_once_in_turn).
        """
        if not self.transport.overlaps_intake:
            return self._run_once_in_turn()
        if isinstance(self.clock, SystemClock):
            return self._run_once_delivering_aside()
        total = Summary()
        intake_done = threading.Event()
        delivered: list[Summary] = []

        def deliver() -> None:
            _deliver_until(self, intake_done, delivered.append)

        sender = threading.Thread(target=deliver, name="deliver-once")
        sender.start()
        try:
            total.add(self._drain())
        finally:
            intake_done.set()
            sender.join()
        for summary in delivered:
            total.add(summary)
        return total

    def _run_once_in_turn(self) -> Summary:
        """Intake, clocks and delivery in turn, round after round.

        A long backlog (full batches two rounds running, say a 200,000-row export) on a machine
        with a second core moves delivery into a process beside intake for the rest of the
        run: writing the outbox is mostly the kernel creating files, which then overlaps
        intake (50,000 rows: 1,689 -> 2,118 rows/s). A small run never pays the ~0.7 s that
        process takes to start.
        """
        total = Summary()
        full_rounds = 0
        spare_core = (os.cpu_count() or 1) > 1 and isinstance(self.clock, SystemClock)
        while not self._stop.is_set():
            round_summary = self.poll_all()
            round_summary.add(self.sweep())
            round_summary.add(self.send_outbox())
            total.add(round_summary)
            if round_summary.work_done == 0:
                break
            taken = sum(round_summary.outcomes.values()) - round_summary.outcomes["known"]
            full_rounds = full_rounds + 1 if taken >= self.config.intake.batch_size else 0
            if spare_core and full_rounds >= 2:
                logfmt.event(log, "run.delivery_aside", reason="long backlog")
                total.add(self._run_once_delivering_aside())
                break
        return total

    def _run_once_delivering_aside(self) -> Summary:
        """run --once with delivery in a process of its own: SMTP waits and smtplib's work then
        overlap intake without sharing its GIL (a thread here reached about half the rate)."""
        context = multiprocessing.get_context("spawn")
        intake_done, results = context.Event(), context.SimpleQueue()
        level = logging.getLogger().level
        sender = context.Process(
            target=_deliver_aside,
            name="deliver-once",
            args=(self.config, level, intake_done, results),
        )
        sender.start()
        total = Summary()
        try:
            total.add(self._drain())
        finally:
            intake_done.set()
            sender.join()
        if sender.exitcode != 0:
            raise RuntimeError(f"delivery process failed (exit code {sender.exitcode})")
        total.sent, total.not_sent = results.get()
        return total

    def _drain(self) -> Summary:
        total = Summary()
        while not self._stop.is_set():
            round_summary = self.poll_all()
            round_summary.add(self.sweep())
            total.add(round_summary)
            if sum(round_summary.outcomes.values()) + round_summary.swept == 0:
                break
        return total

    def stop(self) -> None:
        self._stop.set()
        for source in self.sources:
            if waits(source):
                source.wake()  # an IDLE in progress returns within a quarter second

    def run_forever(self) -> None:
        """The daemon: scheduled polls and deliveries until SIGTERM/SIGINT."""
        scheduler = BackgroundScheduler(timezone=self.config.timezone)
        poll_every = self.config.intake.poll_interval.as_timedelta().total_seconds()
        send_every = self.config.delivery.interval.as_timedelta().total_seconds()
        waiting = [s for s in self.sources if waits(s)]
        scheduled = [s for s in self.sources if not waits(s)]
        scheduler.add_job(
            self._poll_and_send,
            "interval",
            args=(scheduled,),
            seconds=poll_every,
            id="poll",
            max_instances=1,
            coalesce=True,
            next_run_time=self.clock.now(),
        )
        scheduler.add_job(
            self.send_outbox,
            "interval",
            seconds=send_every,
            id="outbox",
            max_instances=1,
            coalesce=True,
        )
        scheduler.add_job(
            self._sweep_and_send,
            "interval",
            seconds=self.config.escalation.sweep_interval.as_timedelta().total_seconds(),
            id="sweep",
            max_instances=1,
            coalesce=True,
            next_run_time=self.clock.now(),
        )
        scheduler.add_job(
            self._sweep_and_send,
            CronTrigger.from_crontab(
                self.config.escalation.digest_cron, timezone=self.config.timezone
            ),
            id="digest",
            max_instances=1,
            coalesce=True,
        )

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            logfmt.event(log, "daemon.stopping", signal=signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        scheduler.start()
        threads = [
            threading.Thread(target=self._intake_loop, args=(s,), name=f"intake-{s.name}")
            for s in waiting
        ]
        for thread in threads:
            thread.start()
        logfmt.event(
            log,
            "daemon.started",
            sources=len(self.sources),
            transport=self.transport.describe(),
            config=self.config.source,
        )
        try:
            while not self._stop.wait(1.0):
                pass
        finally:
            self.stop()  # also when the loop above ended by an exception: wake the threads
            for thread in threads:
                thread.join()  # each finishes its batch in hand; stop() woke their waits
            scheduler.shutdown(wait=True)  # the batch in hand is finished and committed
            logfmt.event(log, "daemon.stopped")

    def _sweep_and_send(self) -> None:
        if self.sweep().swept:
            self.send_outbox()

    def _poll_and_send(self, sources: list[Source]) -> None:
        """One scheduled tick: take in until the sources are dry (a backlog does not wait for
        the next tick), delivering after each round."""
        while not self._stop.is_set():
            summary = self.poll_all(sources)
            if not sum(summary.outcomes.values()):
                break
            self.send_outbox()

    def _intake_loop(self, source: WaitingSource) -> None:
        """One thread per waiting source: take in until dry, deliver, then wait for new mail."""
        poll_every = self.config.intake.poll_interval.as_timedelta().total_seconds()
        while not self._stop.is_set():
            try:
                summary = self.poll(source)
            except Exception as exc:  # a broken batch must not end the thread
                log.exception("event=source.error source=%s", source.name)
                self._record_poll(source, f"{type(exc).__name__}: {exc}")
                self._stop.wait(poll_every)
                continue
            if sum(summary.outcomes.values()):
                self.send_outbox()
            if not self._stop.is_set():
                source.wait_for_mail(poll_every)
