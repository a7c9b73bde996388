"""The delivery runner: the committed outbox to the transport, and, for `run --once`,
delivery beside intake in a thread or a process of its own."""

from __future__ import annotations

import logging
import multiprocessing
import threading
from collections.abc import Callable
from datetime import datetime
from multiprocessing.process import BaseProcess
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from daemon import children
from daemon import log as logfmt
from daemon.clock import Clock, SystemClock, in_window
from daemon.config import Config
from daemon.runners.summary import Summary
from daemon.sender import Transport, make_transport, send_due
from daemon.store.db import make_engine, session_factory

log = logging.getLogger("caseloop")


class DeliveryRunner:
    """Sends what the outbox holds that is due; one delivery at a time in this process."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        sessions: sessionmaker[Session],
        reads: sessionmaker[Session],
        try_writes: sessionmaker[Session],
        transport: Transport,
        *,
        holder: str,
    ) -> None:
        self.config, self.clock, self.transport = config, clock, transport
        self.holder = holder  # the instance: its claims on outbox rows
        self.sessions, self.reads, self.try_writes = sessions, reads, try_writes
        self._lock = threading.Lock()  # the outbox job and the IDLE threads both deliver

    def run_once(self) -> Summary:
        summary = Summary()
        with self._lock:
            summary.sent, summary.not_sent = send_due(
                self.sessions,
                self.reads,
                self.transport,
                self.clock,
                self.config.support_address,
                try_sessions=self.try_writes,
                holder=self.holder,
                consumer_hours=self._consumer_hours,
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

    def _consumer_hours(self, now: datetime) -> bool:
        config = self.config
        return in_window(now, config.delivery.consumer_hours, config.timezone) == now

    def until_done(
        self,
        intake_done: Any,
        report: Callable[[Summary], None],
        orphaned: Callable[[], bool] = lambda: False,
    ) -> None:
        """Deliver until intake is done (or its process is gone) and nothing is left to send."""
        while True:
            finished = intake_done.is_set() or orphaned()  # read before sending: none left behind
            summary = self.run_once()
            report(summary)
            if finished and summary.sent == 0:
                return
            if summary.sent == 0:
                intake_done.wait(0.05)

    def beside_in_thread(self, drain: Callable[[], Summary]) -> Summary:
        """`drain` (intake and clocks until dry) with delivery in a thread beside it: for a
        clock a child process could not share (a test's movable clock)."""
        total = Summary()
        intake_done = threading.Event()
        delivered: list[Summary] = []
        sender = threading.Thread(
            target=self.until_done, args=(intake_done, delivered.append), name="deliver-once"
        )
        sender.start()
        try:
            total.add(drain())
        finally:
            intake_done.set()
            sender.join()
        for summary in delivered:
            total.add(summary)
        return total

    def beside_in_process(self, drain: Callable[[], Summary]) -> Summary:
        """`drain` with delivery in a process of its own: SMTP waits and smtplib's work then
        overlap intake without sharing its GIL (a thread here reached about half the rate).

        The process is started from a thread, so intake never waits on it (forked from the
        fork server, it waits for that server's imports while the server is still starting).
        A process that cannot start (limits, memory) costs no mail: what intake queued is
        delivered here, once intake is done."""
        context = children.context()
        intake_done, results = context.Event(), context.SimpleQueue()
        level = logging.getLogger().level
        sender = context.Process(
            target=_deliver_aside,
            name="deliver-once",
            args=(self.config, self.holder, level, intake_done, results, children.environ()),
        )
        failed: list[BaseException] = []
        starter = threading.Thread(target=_start, args=(sender, failed), name="deliver-start")
        starter.start()
        total = Summary()
        try:
            total.add(drain())
        finally:
            intake_done.set()
            starter.join()
            if not failed:
                sender.join()
        if failed:
            logfmt.event(log, "outbox.aside_failed", logging.WARNING,
                         error=f"{type(failed[0]).__name__}: {failed[0]}",
                         action="delivered in turn")  # fmt: skip
            self.until_done(intake_done, total.add)
            return total
        if sender.exitcode != 0:
            raise RuntimeError(f"delivery process failed (exit code {sender.exitcode})")
        total.sent, total.not_sent = results.get()
        return total


def _start(process: BaseProcess, failed: list[BaseException]) -> None:
    try:
        children.start()
        process.start()
    except Exception as exc:
        failed.append(exc)


def _deliver_aside(
    config: Config,
    holder: str,
    log_level: int,
    intake_done: Any,
    results: Any,
    env: dict[str, str],
) -> None:
    """The delivery process of run --once (see DeliveryRunner.beside_in_process)."""
    children.adopt(env)  # e.g. an SMTP password_env set after the fork server started
    logfmt.setup(logging.getLevelName(log_level))
    engine = make_engine(config.database_url)
    runner = DeliveryRunner(
        config,
        SystemClock(),
        session_factory(engine, eager=True),  # intake writes beside it (store/db.py)
        session_factory(engine, read_only=True),
        session_factory(engine, nowait=True),
        make_transport(config),
        holder=holder,
    )
    total = Summary()
    try:
        parent = multiprocessing.parent_process()
        # If intake's process is killed, deliver what is due and end: never linger.
        runner.until_done(
            intake_done,
            total.add,
            orphaned=lambda: parent is not None and not parent.is_alive(),
        )
    finally:
        engine.dispose()
        results.put((total.sent, total.not_sent))
