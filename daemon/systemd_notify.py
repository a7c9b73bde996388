"""What systemd is told about the daemon (sd_notify): ready, live counts, watchdog, stopping.

A `Type=notify` unit gets $NOTIFY_SOCKET, a unix datagram socket to write `KEY=value` lines to;
`WatchdogSec=` adds $WATCHDOG_USEC (and $WATCHDOG_PID). Without $NOTIFY_SOCKET (a terminal, a
test, another supervisor) every call here does nothing. No libsystemd: one `sendto`.

The watchdog pings (WATCHDOG=1) go out from the daemon's main loop, but only while a job of the
scheduler's own has run lately (the heartbeat): a scheduler that stopped running its jobs stops
the pings, and systemd kills the daemon after WatchdogSec and restarts it (Restart=on-failure).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from apscheduler.schedulers.base import BaseScheduler

from daemon.queries import status_report

if TYPE_CHECKING:
    from daemon.app import App

log = logging.getLogger("caseloop")

STATUS_EVERY = 10.0  # seconds between STATUS= updates, or less with a short watchdog


class Systemd:
    """The daemon's side of sd_notify: READY=1, STATUS=, WATCHDOG=1 while the scheduler beats,
    STOPPING=1. `status` gives the STATUS= text (live counts)."""

    def __init__(
        self,
        status: Callable[[], str],
        environ: Mapping[str, str] = os.environ,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address  # abstract
        if self.address and not self.address.startswith(("/", "\0")):
            log.warning("event=systemd.unsupported notify_socket=%s", address)
            self.address = ""
        usec = environ.get("WATCHDOG_USEC", "")
        ours = environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        # seconds systemd waits for a ping before it kills the daemon; 0: no watchdog
        self.watchdog = int(usec) / 1e6 if usec.isdigit() and ours and self.address else 0.0
        self._status = status
        self._monotonic = monotonic
        self._beat: float | None = None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed = False

    def watch(self, scheduler: BaseScheduler) -> None:
        """Add the heartbeat (when systemd watches) and the STATUS= updates to the scheduler."""
        if not self.address:
            return
        every = min(STATUS_EVERY, self.watchdog / 6) if self.watchdog else STATUS_EVERY
        once = {"max_instances": 1, "coalesce": True, "misfire_grace_time": None}
        if self.watchdog:
            scheduler.add_job(self.beat, "interval", seconds=every, id="heartbeat", **once)
        scheduler.add_job(self.update_status, "interval", seconds=every, id="status", **once)

    def beat(self) -> None:
        """The scheduler ran this job: it is alive."""
        self._beat = self._monotonic()

    def tick(self) -> None:
        """From the main loop, about once a second: WATCHDOG=1 while the heartbeat is fresh
        (three heartbeats within half of WatchdogSec; two may be missed)."""
        fresh = self._beat is not None and self._monotonic() - self._beat < self.watchdog / 2
        if self.watchdog and fresh:
            self.send("WATCHDOG=1")

    def ready(self) -> None:
        self.send("READY=1", f"STATUS={self._status_text()}")

    def update_status(self) -> None:
        self.send(f"STATUS={self._status_text()}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping: finishing the batch in hand")

    def send(self, *lines: str) -> None:
        if not self.address:
            return
        try:
            with self._lock:
                if self._socket is None:
                    self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._socket.settimeout(1.0)  # a stuck manager never stalls the daemon
                self._socket.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._failed:  # once: the main loop would repeat it every second
                log.warning("event=systemd.notify_failed error=%s", exc)
            self._failed = True
        else:
            self._failed = False

    def _status_text(self) -> str:
        try:
            return self._status()
        except Exception as exc:  # the counts are for the operator; never a reason to stop
            log.warning("event=systemd.status_failed error=%s: %s", type(exc).__name__, exc)
            return f"counts unavailable: {type(exc).__name__}"


def status_line(app: App) -> str:
    """STATUS=: the live counts of `caseloop status` in one line."""
    with app.reads() as session:
        report = status_report(app, session)
    sources = report["sources"]
    failing = sum(1 for s in sources if s["failing"] or s["stalled"])
    cases, outbox = report["cases"], report["outbox"]
    return (
        f"{len(sources)} sources, {failing} failing; cases {cases['open']} open, "
        f"{cases['overdue']} overdue, {cases['urgent']} urgent; outbox {outbox['queued']} "
        f"queued, {outbox['failed']} failed, {outbox['sent']} sent"
    )
