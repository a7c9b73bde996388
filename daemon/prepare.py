"""Runs the PREPARE steps (parse, store attachments, loop guard, classify) for a batch of items.

One item's failure is that item's quarantine, not the batch's. Every attachment a prepared item
names is on disk before the items are handed on, so no row commits naming a missing file.

Read ahead (`[intake] prepare_aside`, on by default with 2+ cores): while the main process
decides a full batch, the next batch of the same mailbox, read ahead without taking it
(`peek`), is prepared in one worker process. The next poll uses that work for each item it
fetches whose key and bytes are the same, and prepares anything else inline (also the chunks
the worker has not begun, and all of them while it is still starting: its start-up, about half
a second, is never waited for), so reading ahead changes speed, never outcomes. A worker that
fails costs its batch's head start only: the items are prepared inline and the worker is
started again (three failures in a row turn it off).
Polls of less than a full batch never start the worker: a lone mail is prepared inline at once.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.process
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import cast

from daemon import children
from daemon import log as logfmt
from daemon.config import Config
from daemon.items import Incoming
from daemon.store.blobs import BlobStore
from handlers.context import BlobWriter, Prepared
from handlers.pipeline import prepare

log = logging.getLogger("caseloop.prepare")

CHUNK = 25  # items per task: what the worker has not begun when it is needed is done inline
MAX_FAILURES = 3  # worker failures in a row before reading ahead is turned off
MAX_SOURCES = 4  # mailboxes whose next batch is held at once (memory)
MAX_AGE = 60.0  # seconds a batch read ahead stays usable
STOP_WAIT = 5.0  # seconds a stopping worker gets to end by itself


def prepare_one(item: Incoming, config: Config, blobs: BlobWriter) -> Prepared:
    """The item prepared; an internal error quarantines it (bad input never stops the queue)."""
    try:
        return prepare(item, config, blobs)
    except Exception as exc:
        log.exception("event=prepare.error source=%s item=%s", item.source, item.label)
        failed = Prepared(item=item)
        failed.stop("quarantined", f"internal error while parsing: {type(exc).__name__}: {exc}")
        return failed


@dataclass
class _ReadAhead:
    """A source's next batch handed to the worker: by which pool, when, in chunks (none yet
    while the worker's start is under way: it hands them over when it has started)."""

    pool: ProcessPoolExecutor
    at: float  # time.monotonic() when read ahead
    items: list[Incoming]
    chunks: list[Future[list[Prepared]]] = field(default_factory=list)
    dropped: bool = False

    def hand_over(self) -> None:
        self.chunks = [
            self.pool.submit(_prepare_aside, self.items[i : i + CHUNK])
            for i in range(0, len(self.items), CHUNK)
        ]

    def drop(self) -> None:
        self.dropped = True
        for chunk in self.chunks:
            chunk.cancel()


class Preparer:
    def __init__(self, config: Config, blobs: BlobWriter, *, aside: bool = False) -> None:
        self.config, self.blobs = config, blobs
        self.aside = aside
        self._pool: ProcessPoolExecutor | None = None
        self._hello: Future[int] | None = None  # done once the worker is up
        self._launch: threading.Thread | None = None  # starting the worker (see _start)
        self._ahead: dict[str, _ReadAhead] = {}  # source name -> its next batch
        self._failures = 0
        self.taken_aside = 0  # items whose work the worker did (the tests read it)
        self._lock = threading.Lock()  # IDLE threads poll their mailboxes side by side
        # A chunk's longest wait: each of its mails may take the whole time budget.
        budget = config.intake.message_time_budget.as_timedelta().total_seconds()
        self._chunk_timeout = CHUNK * budget + 30

    def prepare_all(self, items: list[Incoming]) -> list[Prepared]:
        return [prepare_one(item, self.config, self.blobs) for item in items]

    def pending(self, source: str) -> _ReadAhead | None:
        """What was read ahead for `source`, handed over once (to `take`); None when nothing
        was, or it is older than MAX_AGE (attachments it stored may have been cleaned since)."""
        with self._lock:
            found = self._ahead.pop(source, None)
        if found is not None and time.monotonic() - found.at > MAX_AGE:
            found.drop()
            return None
        return found

    def take(self, pending: _ReadAhead | None, items: list[Incoming]) -> list[Prepared]:
        """These items prepared: from the work read ahead where an item is the same (key and
        bytes), inline otherwise. A chunk the worker has not begun (it may still be starting)
        is cancelled and prepared inline rather than waited for. What the worker quarantined
        is prepared again inline: sharing the CPU, it may have run out of time budget where
        inline would not."""
        ready = self._ready(pending) if pending is not None else {}
        done = []
        for item in items:
            prep = ready.get(item.key)
            if prep is None or prep.item.raw != item.raw or prep.outcome == "quarantined":
                prep = prepare_one(item, self.config, self.blobs)
            else:
                prep.item = item  # the item as fetched now (its label may differ)
                self.taken_aside += 1
            done.append(prep)
        return done

    def _ready(self, pending: _ReadAhead) -> dict[str, Prepared]:
        """What the worker prepared of `pending`, by key, waiting only for chunks it has begun."""
        ready: dict[str, Prepared] = {}
        for chunk in pending.chunks:
            if chunk.cancel() or not (chunk.done() or self._up()):
                continue  # not begun, or the worker is still starting: inline, not waited for
            got = self._collect(pending.pool, chunk)
            if got is None:  # the worker failed: the rest is done inline too
                pending.drop()
                break
            ready.update(got)
        return ready

    def ahead(self, source: str, items: list[Incoming]) -> None:
        """Start preparing `items` (the batch after the one being decided) in the worker.
        At most MAX_SOURCES mailboxes' batches are held: the oldest goes."""
        if not self.aside or not items:
            return
        with self._lock:
            stale = self._ahead.pop(source, None)
            if stale is not None:
                stale.drop()
            while len(self._ahead) >= MAX_SOURCES:
                self._ahead.pop(next(iter(self._ahead))).drop()
            pool = self._start()
            hello = self._hello
            if hello is not None and hello.done() and hello.exception() is not None:
                self._failed(pool, cast(BaseException, hello.exception()))  # died starting
                return
            held = self._ahead[source] = _ReadAhead(pool, time.monotonic(), items)
            if hello is None:
                return  # the worker is being started: that start hands the batch over
            try:
                held.hand_over()
            except Exception as exc:  # the worker is gone: inline it is, this time
                self._failed(pool, exc)

    def warm(self) -> None:
        """Start the worker and wait until it is up (the tests; a backlog starts it itself)."""
        with self._lock:
            self._start()
            launch = self._launch
        assert launch is not None
        launch.join()
        hello = self._hello
        assert hello is not None
        hello.result()

    def _up(self) -> bool:
        hello = self._hello
        return hello is not None and hello.done() and hello.exception() is None

    def close(self) -> None:
        launch = self._launch
        if launch is not None:
            launch.join(STOP_WAIT)  # a worker being started is then stopped with the pool
        with self._lock:
            pool, self._pool, self._hello = self._pool, None, None
            for stale in self._ahead.values():
                stale.drop()
            self._ahead.clear()
        if pool is not None:
            _stop(pool)

    def _start(self) -> ProcessPoolExecutor:
        """The pool. Its worker is started from a thread: a start waits for the fork server
        (its imports, the first time), and intake never waits for the worker to start."""
        if self._pool is None:
            pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=children.context(),
                initializer=_start_aside,
                initargs=(self.config, logging.getLogger().level, children.environ()),
            )
            self._pool, self._hello = pool, None
            self._launch = threading.Thread(
                target=self._start_worker, args=(pool,), name="prepare-start", daemon=True
            )
            self._launch.start()
        return self._pool

    def _start_worker(self, pool: ProcessPoolExecutor) -> None:
        try:
            children.start()
            hello = pool.submit(os.getpid)  # starts the worker; done once it is up
        except Exception as exc:  # no process (limits, memory): inline it is, this time
            with self._lock:
                self._failed(pool, exc)
            return
        with self._lock:
            if self._pool is not pool:
                return
            self._hello = hello
            try:  # what was read ahead while it started
                for held in self._ahead.values():
                    if held.pool is pool and not held.chunks and not held.dropped:
                        held.hand_over()
            except Exception as exc:
                self._failed(pool, exc)

    def _collect(
        self, pool: ProcessPoolExecutor, chunk: Future[list[Prepared]]
    ) -> dict[str, Prepared] | None:
        try:
            prepared = chunk.result(timeout=self._chunk_timeout)
        except Exception as exc:  # dead, broken or stuck: the items are prepared inline
            with self._lock:
                self._failed(pool, exc)
            return None
        self._failures = 0
        return {prep.item.key: prep for prep in prepared}

    def _failed(self, pool: ProcessPoolExecutor | None, exc: BaseException) -> None:
        """The worker of `pool` failed. Counted once per worker: the other mailboxes' batches
        held by the same dead worker fail too, and a newer worker is not theirs to stop."""
        if pool is not None and pool is not self._pool:
            return
        self._failures += 1
        if pool is not None:
            _stop(pool)
            self._pool, self._hello = None, None
        off = self._failures >= MAX_FAILURES
        if off:
            self.aside = False
        action = "read-ahead off, inline" if off else "inline, worker restarted"
        logfmt.event(log, "prepare.aside_failed", logging.ERROR if off else logging.WARNING,
                     error=f"{type(exc).__name__}: {exc}", failures=self._failures,
                     action=action)  # fmt: skip


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut the pool down without waiting on a worker that may be stuck: ended by its PID
    when it has not ended within STOP_WAIT seconds."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # its own workers
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + STOP_WAIT
    for process in processes:
        process.join(max(deadline - time.monotonic(), 0))
        if process.is_alive():
            process.kill()
            process.join(1)


_worker: tuple[Config, BlobStore] | None = None


def _start_aside(config: Config, log_level: int, env: dict[str, str]) -> None:
    global _worker
    children.adopt(env)
    # A stop (systemd's SIGTERM to the whole unit, Ctrl-C) is intake's to handle: it ends the
    # worker when it closes, and the worker ends by itself if intake dies.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logfmt.setup(logging.getLevelName(log_level))
    _worker = (config, BlobStore(config.blobs_dir))
    parent = multiprocessing.parent_process()
    if parent is not None:
        # Intake killed (-9, OOM): end at once. The pool's result pipe is open at this end too,
        # so a worker left alone would block for ever handing back its last batch.
        threading.Thread(target=_end_with, args=(parent,), daemon=True).start()


def _end_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()
    os._exit(1)


def _prepare_aside(items: list[Incoming]) -> list[Prepared]:
    assert _worker is not None
    config, blobs = _worker
    return [prepare_one(item, config, blobs) for item in items]
