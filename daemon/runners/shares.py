"""Which sources this instance works: its fair share of them, through leases in the database.

Every mailbox and form folder is worked by one instance at a time (a lease, see
daemon/store/coordination.py). With several instances alive, each takes at most its share
(the sources divided by the instances alive, rounded up) and gives back what is over it, at
a batch boundary, so a newly started instance gets work within a batch or two and a dead
one's sources are taken over once its leases expire.
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import datetime, timedelta

from sqlalchemy.orm import Session, sessionmaker

from daemon import __version__
from daemon import log as logfmt
from daemon.clock import Clock
from daemon.runners.source import Source
from daemon.store import coordination
from daemon.store.db import InstanceLock

log = logging.getLogger("caseloop")


class Shares:
    """This instance's leases on its sources, and its row in the instance registry."""

    def __init__(
        self,
        clock: Clock,
        sessions: sessionmaker[Session],
        sources: list[Source],
        ttl: timedelta,
        instance_id: str | None = None,
    ) -> None:
        self.clock, self.sessions, self.sources, self.ttl = clock, sessions, sources, ttl
        self.instance_id = instance_id or coordination.new_instance_id()
        self._holding: set[str] = set()  # the sources this instance took last (no database)
        self._registered = False
        self._lock: InstanceLock | None = None
        self._mode = "run"
        self._beating = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the leases -----------------------------------------------------------------------

    def take(self, source: Source) -> bool:
        """Whether this instance works `source` now: it holds the lease (renewed) or took it,
        within its fair share. Over its share, it gives this one back."""
        name = coordination.source_lease(source.name)
        now = self.clock.now()
        with self.sessions.begin() as session:
            held = {
                h.name
                for h in coordination.leases(session, now)
                if h.holder == self.me and h.name.startswith(coordination.SOURCE_PREFIX)
            }
            share = self._share(session, now)
            mine = name in held
            if mine and len(held) > share:
                coordination.release(session, name, self.me)
                logfmt.event(log, "lease.released", lease=name, reason="over fair share")
                taken = False
            elif not mine and len(held) >= share:
                taken = False
            else:
                taken = coordination.take(session, name, self.me, now, self.ttl)
        (self._holding.add if taken else self._holding.discard)(source.name)
        if taken and not mine:
            logfmt.event(log, "lease.taken", lease=name, instance=self.me)
        return taken

    def holds(self, source: Source) -> bool:
        """Whether this instance held `source` when it last looked (take)."""
        return source.name in self._holding

    def hold(self, session: Session, source: Source, holder: str | None = None) -> bool:
        """In the transaction of a batch from `source`: the lease is still ours (renewed and
        locked until the batch commits), else the batch must roll back."""
        name = coordination.source_lease(source.name)
        return coordination.hold(session, name, holder or self.me, self.clock.now(), self.ttl)

    def others_over_share(self) -> bool:
        """Some other live instance holds more of our sources than its share: it gives them
        back at its next batch boundary (run --once waits for that rather than end)."""
        now = self.clock.now()
        names = {coordination.source_lease(s.name) for s in self.sources}
        with self.sessions.begin() as session:
            share = self._share(session, now)
            count: dict[str, int] = {}
            for held in coordination.leases(session, now):
                if held.name in names and held.holder != self.me:
                    count[held.holder] = count.get(held.holder, 0) + 1
        return any(n > share and not h.startswith(coordination.IMPORT_PREFIX)
                   for h, n in count.items())  # fmt: skip

    def coming(self, stop: threading.Event) -> bool:
        """run --once, a round found nothing: True (after a short wait) when some of our
        sources are still to come to us from an instance over its share."""
        if not self.others_over_share():
            return False
        stop.wait(0.2)
        return True

    def _share(self, session: Session, now: datetime) -> int:
        alive = {i.id for i in coordination.alive(session, now, self.ttl)} | {self.me}
        return max(1, math.ceil(len(self.sources) / len(alive)))

    @property
    def me(self) -> str:
        return self.instance_id

    # -- the registry and the heartbeat ---------------------------------------------------

    def start(self, mode: str, *, sqlite_file: str | None = None) -> None:
        """Register this instance and beat its heart (renewing its leases) every third of
        the lease, in a thread, until stop(). First the instances known dead are reaped (see
        coordination.reap): a restart after a crash takes its mailboxes back at once.

        On SQLite (`sqlite_file`), first the file's instance lock: InstanceRunning when
        another instance holds it. Holding it proves every other instance row dead."""
        if sqlite_file is not None:
            self._lock = InstanceLock.take(sqlite_file)
        with self.sessions.begin() as session:
            for dead in coordination.reap(session, only_instance=sqlite_file is not None):
                logfmt.event(log, "instance.reaped", instance=dead, reason="not running")
            coordination.register(session, self.me, mode, __version__, self.clock.now())
        self._mode = mode
        self._registered = True
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._thread.start()
        logfmt.event(log, "instance.started", instance=self.me, mode=mode)

    def _beat(self) -> None:
        every = self.ttl.total_seconds() / 3
        while not self._beating.wait(every):
            try:
                self.beat()
            except Exception:  # a database away for a moment: the next beat tries again
                log.exception("event=instance.heartbeat_failed instance=%s", self.me)

    def beat(self) -> None:
        """Alive: renew the leases; take the instances silent for two leases for dead."""
        now = self.clock.now()
        with self.sessions.begin() as session:
            if not coordination.beat(session, self.me, now):
                # Taken for dead while it could not beat (a pause, the database away): its
                # leases went; register again and take sources anew, from scratch.
                coordination.register(session, self.me, self._mode, __version__, now)
                logfmt.event(log, "instance.returned", logging.WARNING, instance=self.me)
            coordination.renew_all(session, self.me, now, self.ttl)
            for dead in coordination.reap_silent(session, now, 2 * self.ttl):
                logfmt.event(log, "instance.reaped", instance=dead, reason="no heartbeat")

    def stop(self) -> None:
        """Unregister and give every lease back (a clean stop: others take over at once)."""
        self._beating.set()
        if self._thread is not None:
            self._thread.join()
        if self._registered or self._holding:
            with self.sessions.begin() as session:
                coordination.unregister(session, self.me)
        self._registered = False
        self._holding = set()
        if self._lock is not None:
            self._lock.release()
            self._lock = None
