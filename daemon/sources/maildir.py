"""A local Maildir source: reads new/, settles each message only after its transaction committed."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from daemon.items import Incoming
from daemon.maildirs import ensure_maildir

log = logging.getLogger("caseloop.maildir")

BATCH_BYTES = 64 * 1024 * 1024  # memory bound of one batch, however large the mails


class MaildirSource:
    """Every file in new/ is one incoming item, keyed by its unique Maildir name."""

    def __init__(self, name: str, path: Path, quarantine_path: Path, create: bool = True) -> None:
        """`create`: the first fetch makes the Maildir when it is missing (a folder of our own,
        under data_dir); otherwise a missing one is an error each poll, never created (a
        mistyped path would be a folder nobody delivers to)."""
        self.name = name
        self.path = path
        self.quarantine_path = quarantine_path
        self.create = create
        self.last_error: str | None = None

    def describe(self) -> str:
        return f"maildir {self.path}"

    def check(self) -> str:
        """What check-config reports: the folder is there and how much waits in it (it
        creates nothing)."""
        if not (self.path / "new").is_dir():
            return (
                f"FAILED: no Maildir at {self.path} (no new/ folder): check the path; "
                "`caseloop init` creates the folders"
            )
        return f"ok, {self.backlog()} message(s) waiting in {self.path / 'new'}"

    def backlog(self) -> int:
        try:
            return sum(1 for _ in os.scandir(self.path / "new"))
        except FileNotFoundError:
            return 0

    def fetch(self, limit: int) -> list[Incoming]:
        """The oldest messages in new/: at most `limit`, and about BATCH_BYTES of mail."""
        if not (self.path / "new").is_dir():
            if not self.create:
                self.last_error = f"no Maildir at {self.path} (no new/ folder)"
                return []
            ensure_maildir(self.path)
        self.last_error = None
        return self.peek(limit, None)

    def peek(self, limit: int, after: str | None) -> list[Incoming]:
        """Like fetch, from the first item after the one keyed `after` (a dry run reads on
        without settling)."""
        names = sorted(
            e.name
            for e in os.scandir(self.path / "new")
            if e.is_file() and (after is None or e.name.split(":", 1)[0] > after)
        )[:limit]
        items: list[Incoming] = []
        taken = 0
        for name in names:
            try:
                raw = (self.path / "new" / name).read_bytes()
            except FileNotFoundError:  # taken by another reader meanwhile
                continue
            items.append(Incoming(source=self.name, key=name.split(":", 1)[0], raw=raw, label=name))
            taken += len(raw)
            if taken >= BATCH_BYTES:  # a few huge mails make a batch of their own
                break
        return items

    def settle_batch(self, settled: list[tuple[Incoming, str]]) -> None:
        for item, outcome in settled:
            self.settle(item, outcome)

    def settle(self, item: Incoming, outcome: str) -> None:
        """After commit: processed mail to cur/ (seen), quarantined or ignored mail aside."""
        src = self.path / "new" / item.label
        if outcome in ("quarantined", "ignored"):
            ensure_maildir(self.quarantine_path)
            dst = self.quarantine_path / "new" / item.label
        else:
            dst = self.path / "cur" / f"{item.label.split(':', 1)[0]}:2,S"
        try:
            os.replace(src, dst)
        except FileNotFoundError:
            log.warning("event=settle.missing source=%s item=%s", self.name, item.label)
