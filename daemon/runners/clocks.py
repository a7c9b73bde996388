"""The clocks runner: SLA steps, surveys and the digest when due, and the hourly retention."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from daemon import log as logfmt
from daemon.clock import Clock, SystemClock
from daemon.config import Config
from daemon.runners.summary import Summary
from daemon.sender import Forgotten
from daemon.store import coordination
from daemon.store.blobs import BlobStore
from handlers import assign, digest, privacy, sla, survey
from handlers.context import Services

log = logging.getLogger("caseloop")

RETENTION_EVERY = timedelta(hours=1)


class ClocksRunner:
    """Takes the steps time makes due; each job in its own transaction."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        sessions: sessionmaker[Session],
        services: Services,
        blobs: BlobStore,
        *,
        stop: threading.Event,
        holder: str,
        forget: Callable[[list[str]], Forgotten],
    ) -> None:
        self.config, self.clock, self.sessions = config, clock, sessions
        self.forget = forget  # the transport's: erased mail's copies outside the database
        self.holder = holder  # the instance: the retention run is taken once across them
        self.services, self.blobs, self.stop = services, blobs, stop
        self.files_clock: Clock = SystemClock()  # file times are the real clock's
        self._lock = threading.Lock()  # the sweep and digest jobs share the clock steps
        self._retention_due: datetime | None = None  # see _retention

    def run_once(self) -> Summary:
        """The clock jobs: SLA reminders and escalations, surveys due or expired, the digest.

        Each runs in its own transaction, so one failing does not hold back the others.
        """
        summary = Summary()
        with self._lock:
            self._jobs(summary)
        return summary

    def _jobs(self, summary: Summary) -> None:
        jobs: list[tuple[str, Callable[[Session, Services, datetime], int]]] = [
            ("sla", sla.sweep),
            ("survey", survey.sweep),
            ("digest", digest.scheduled),
            ("assignments", assign.send_folded),
        ]
        for name, job in jobs:
            if self.stop.is_set():
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
        if not self.stop.is_set():
            self._retention(summary)

    def _retention(self, summary: Summary) -> None:
        """[privacy] retain_closed: personal data of long-closed cases erased; then the files
        of erased attachments go, once that is committed.

        Once an hour at most, across all instances (a lease taken for the hour): retention
        counts in days and the file grace is an hour, so each sweep (every minute, every round
        of run --once) need not scan for it again."""
        now = self.clock.now()
        if self._retention_due is not None and now < self._retention_due:
            return
        self._retention_due = now + RETENTION_EVERY
        try:
            with self.sessions.begin() as session:
                if not coordination.once_per(
                    session, "job:retention", self.holder, now, RETENTION_EVERY
                ):
                    return  # another instance ran it within the hour
                done = privacy.retention_sweep(session, self.config, now)
            deleted, _waiting = self.collect_files()
            forgotten = self.forget(done.mail_sent)  # the outbox folder's copies
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
                outbox_copies_removed=forgotten.removed,
                sent_beyond_reach=len(forgotten.beyond_reach),
            )
        summary.swept += len(done.cases)

    def collect_files(self) -> tuple[int, int]:
        """Delete the files of erased attachments no unerased attachment names, once the
        erasure is committed; (deleted, waiting: touched within privacy.FILE_GRACE)."""
        with self.sessions.begin() as session:
            files = privacy.files_to_collect(session, self.files_clock.now())
            deleted, waiting = 0, set()
            for sha in files.unreferenced:
                if self.blobs.delete(sha, unless_touched_after=files.touched_after):
                    deleted += 1
                elif self.blobs.path(sha).exists():
                    waiting.add(sha)
            files.settle(waiting)
        return deleted, len(waiting)
