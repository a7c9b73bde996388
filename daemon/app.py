"""Builds sources, runners, sender and scheduler from a Config; `run` and `run --once`."""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from daemon import log as logfmt
from daemon.clock import Clock, SystemClock, WorkCalendar
from daemon.config import Config
from daemon.datadir import prepare_data_dir
from daemon.runners.backfill import BackfillRunner, ImportBusy, ImportClaims
from daemon.runners.clocks import ClocksRunner
from daemon.runners.delivery import DeliveryRunner
from daemon.runners.intake import IntakeRunner
from daemon.runners.shares import Shares
from daemon.runners.source import Source, WaitingSource, waits
from daemon.runners.summary import Summary
from daemon.sender import make_transport
from daemon.sources.build import build_sources
from daemon.store.blobs import BlobStore
from daemon.store.db import InstanceRunning, make_engine, migrate, needs_migration, session_factory
from daemon.systemd_notify import Systemd, status_line
from handlers import pipeline
from handlers.notify import Templates

__all__ = ["App", "ImportBusy", "InstanceRunning", "Summary", "build_sources"]

log = logging.getLogger("caseloop")


class App:
    """One caseloop instance: database, sources, runners and sender wired from a Config."""

    def __init__(self, config: Config, clock: Clock | None = None, *, create: bool = True) -> None:
        """`create`: make the data folder and the embedded database when missing (`run`,
        `import`); otherwise (staff and read-only commands) their absence is a ConfigError:
        a command run in the wrong folder says so instead of making an empty database."""
        self.config = config
        self.clock = clock or SystemClock()
        prepare_data_dir(config, create)
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
        self.sources = build_sources(config)
        self.transport = make_transport(config)
        self._stop = threading.Event()
        self.shares = Shares(self.clock, self.sessions, self.sources, config.lease.as_timedelta())
        self.instance_id = self.shares.instance_id
        self.claims = ImportClaims(self.clock, self.sessions)
        self.intake = IntakeRunner(
            config,
            self.clock,
            self.sources,
            self.sessions,
            self.reads,
            self.blobs,
            self.services,
            stop=self._stop,
            shares=self.shares,
        )
        self.backfill = BackfillRunner(config, self.intake, self.claims)
        self.clocks = ClocksRunner(
            config,
            self.clock,
            self.sessions,
            self.services,
            self.blobs,
            stop=self._stop,
            holder=self.instance_id,
            forget=self.transport.forget,
        )
        self.delivery = DeliveryRunner(
            config,
            self.clock,
            self.sessions,
            self.reads,
            self.try_writes,
            self.transport,
            holder=self.instance_id,
        )

    def start_instance(self, mode: str) -> None:
        """Become a running instance (`run`, `run --once`): registered, with a heartbeat that
        renews its leases; on SQLite the only one (else InstanceRunning)."""
        sqlite = self.engine.dialect.name == "sqlite"
        self.shares.start(mode, sqlite_file=self.engine.url.database if sqlite else None)

    def close(self) -> None:
        self.intake.preparer.close()
        self.shares.stop()
        for source in self.sources:
            if waits(source):
                source.close()
        self.engine.dispose()

    # -- the runners, one job each ----------------------------------------------------------

    def poll(self, source: Source) -> Summary:
        return self.intake.poll(source)

    def poll_all(self, sources: list[Source] | None = None) -> Summary:
        return self.intake.run_once(sources)

    def claim_import(self, source: Source, until: datetime | None) -> None:
        self.claims.claim(source, until)

    def sweep(self) -> Summary:
        return self.clocks.run_once()

    def send_outbox(self) -> Summary:
        return self.delivery.run_once()

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
        if self.clock.shared_with_children:
            return self.delivery.beside_in_process(self._drain)
        return self.delivery.beside_in_thread(self._drain)

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
        spare_core = (os.cpu_count() or 1) > 1 and self.clock.shared_with_children
        while not self._stop.is_set():
            round_summary = self.poll_all()
            round_summary.add(self.sweep())
            round_summary.add(self.send_outbox())
            total.add(round_summary)
            if round_summary.work_done == 0 and not self.shares.coming(self._stop):
                break
            taken = sum(round_summary.outcomes.values()) - round_summary.outcomes["known"]
            full_rounds = full_rounds + 1 if taken >= self.config.intake.batch_size else 0
            if spare_core and full_rounds >= 2:
                logfmt.event(log, "run.delivery_aside", reason="long backlog")
                total.add(self.delivery.beside_in_process(self._drain))
                break
        return total

    def _drain(self) -> Summary:
        """Intake and the clocks, round after round, until a round finds nothing to do."""
        total = Summary()
        while not self._stop.is_set():
            round_summary = self.poll_all()
            round_summary.add(self.sweep())
            total.add(round_summary)
            idle = sum(round_summary.outcomes.values()) + round_summary.swept == 0
            if idle and not self.shares.coming(self._stop):
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
        self._schedule(scheduler)
        systemd = Systemd(status=lambda: status_line(self))
        systemd.watch(scheduler)

        def _on_signal(signum: int, _frame: FrameType | None) -> None:
            logfmt.event(log, "daemon.stopping", signal=signal.Signals(signum).name)
            self.stop()

        signal.signal(signal.SIGTERM, _on_signal)
        signal.signal(signal.SIGINT, _on_signal)
        scheduler.start()
        threads = [
            threading.Thread(target=self._intake_loop, args=(s,), name=f"intake-{s.name}")
            for s in self.sources
            if waits(s)
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
        systemd.ready()  # database open, instance registered, jobs and source threads running
        try:
            while not self._stop.wait(1.0):
                systemd.tick()
        finally:
            systemd.stopping()
            self.stop()  # also when the loop above ended by an exception: wake the threads
            for thread in threads:
                thread.join()  # each finishes its batch in hand; stop() woke their waits
            scheduler.shutdown(wait=True)  # the batch in hand is finished and committed
            logfmt.event(log, "daemon.stopped")

    def _schedule(self, scheduler: BackgroundScheduler) -> None:
        """The jobs: polls of the sources that do not wait, the outbox, the sweep, the digest."""
        every = {
            "poll": self.config.intake.poll_interval,
            "outbox": self.config.delivery.interval,
            "sweep": self.config.escalation.sweep_interval,
        }
        seconds = {job: d.as_timedelta().total_seconds() for job, d in every.items()}
        once = {"max_instances": 1, "coalesce": True}
        scheduled = [s for s in self.sources if not waits(s)]
        scheduler.add_job(
            self._poll_and_send,
            "interval",
            args=(scheduled,),
            seconds=seconds["poll"],
            id="poll",
            next_run_time=self.clock.now(),
            **once,
        )
        scheduler.add_job(
            self.send_outbox, "interval", seconds=seconds["outbox"], id="outbox", **once
        )
        scheduler.add_job(
            self._sweep_and_send,
            "interval",
            seconds=seconds["sweep"],
            id="sweep",
            next_run_time=self.clock.now(),
            **once,
        )
        digest = CronTrigger.from_crontab(
            self.config.escalation.digest_cron, timezone=self.config.timezone
        )
        scheduler.add_job(self._sweep_and_send, digest, id="digest", **once)

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
        lease_check = min(poll_every, self.config.lease.as_timedelta().total_seconds() / 3)
        while not self._stop.is_set():
            try:
                summary = self.poll(source)
            except Exception as exc:  # a broken batch must not end the thread
                log.exception("event=source.error source=%s", source.name)
                self.intake.record_poll(source, f"{type(exc).__name__}: {exc}")
                self._stop.wait(poll_every)
                continue
            if not self.shares.holds(source):
                # Another instance works it: do not wait on its mail; look again soon, and
                # take it over once that instance's lease has lapsed.
                self._stop.wait(lease_check)
                continue
            if sum(summary.outcomes.values()):
                self.send_outbox()
            if not self._stop.is_set():
                source.wait_for_mail(poll_every)
