"""Runs the PREPARE steps (parse, store attachments, loop guard, classify) for a batch of items.

One item's failure is that item's quarantine, not the batch's. Every attachment a prepared item
names is on disk before the items are handed on, so no row commits naming a missing file.
Worker processes for this stage were measured and dropped: on 2 cores, moving parsed mail
between processes and the workers' competition for the CPU made intake slower than this.
"""

from __future__ import annotations

import logging

from daemon.config import Config
from daemon.items import Incoming
from handlers.context import BlobWriter, Prepared
from handlers.pipeline import prepare

log = logging.getLogger("caseloop.prepare")


class Preparer:
    def __init__(self, config: Config, blobs: BlobWriter) -> None:
        self.config, self.blobs = config, blobs

    def prepare_all(self, items: list[Incoming]) -> list[Prepared]:
        done = []
        for item in items:
            try:
                done.append(prepare(item, self.config, self.blobs))
            except Exception as exc:  # bad input never stops the queue
                log.exception("event=prepare.error source=%s item=%s", item.source, item.label)
                failed = Prepared(item=item)
                failed.stop(
                    "quarantined", f"internal error while parsing: {type(exc).__name__}: {exc}"
                )
                done.append(failed)
        return done
