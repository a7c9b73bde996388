"""Runs the PREPARE steps (parse, store blobs, loop guard, classify) beside the database work.

Parsing is CPU work that needs no database, so with `[intake] workers` > 0 it runs in worker
processes while the main process decides and commits the previous chunk. Each worker stores the
blobs it parsed and waits for them to reach the disk before it hands its chunk back, so no row
can commit naming a blob that is not there.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor

from daemon.config import Config
from daemon.store.blobs import BlobStore
from handlers.pipeline import Incoming, Prepared, PrepareStep, prepare, prepare_steps

log = logging.getLogger("caseloop.workers")

CHUNK = 25  # items per round trip to a worker

_worker: tuple[Config, BlobStore, list[PrepareStep]] | None = None


def prepare_chunk(
    items: list[Incoming], config: Config, blobs: BlobStore, steps: list[PrepareStep]
) -> list[Prepared]:
    """Prepare each item; one item's failure is that item's quarantine, not the chunk's."""
    done = []
    for item in items:
        try:
            done.append(prepare(item, config, blobs, steps))
        except Exception as exc:  # bad input never stops the queue
            log.exception("event=prepare.error source=%s item=%s", item.source, item.label)
            failed = Prepared(item=Incoming(item.source, item.key, b"", item.label))
            failed.stop("quarantined", f"internal error while parsing: {type(exc).__name__}: {exc}")
            done.append(failed)
    blobs.flush()
    return done


def _init_worker(config: Config) -> None:
    global _worker
    _worker = (config, BlobStore(config.blobs_dir), prepare_steps())


def _run_in_worker(items: list[Incoming]) -> list[Prepared]:
    assert _worker is not None
    return prepare_chunk(items, *_worker)


class Preparer:
    """Hands back prepared chunks in order; with workers, later chunks are parsed meanwhile."""

    def __init__(self, config: Config, blobs: BlobStore) -> None:
        self.config, self.blobs = config, blobs
        self.steps = prepare_steps()
        self.workers = config.intake.workers
        self._pool: ProcessPoolExecutor | None = None

    def chunks(self, items: list[Incoming]) -> Iterator[list[Prepared]]:
        pieces = [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]
        if self.workers == 0 or len(pieces) < 2:
            for piece in pieces:
                yield prepare_chunk(piece, self.config, self.blobs, self.steps)
            return
        pool = self._start()
        futures: list[Future[list[Prepared]]] = [pool.submit(_run_in_worker, p) for p in pieces]
        try:
            for piece, future in zip(pieces, futures, strict=True):
                try:
                    chunk = future.result()
                except Exception:  # a broken worker costs speed, never mail
                    log.exception("event=workers.failed action=prepare-inline items=%d", len(piece))
                    chunk = prepare_chunk(piece, self.config, self.blobs, self.steps)
                yield chunk
        finally:
            for future in futures:
                future.cancel()

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # spawn, not fork: the parent runs threads (scheduler, blob writers).
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.config,),
            )
            log.info("event=workers.started count=%d pid=%d", self.workers, os.getpid())
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
