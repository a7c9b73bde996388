"""Content-addressed files (attachments) under the data folder, named by sha256."""

from __future__ import annotations

import hashlib
import os
from datetime import datetime
from pathlib import Path


class BlobStore:
    """<root>/ab/<sha256>: the sender's filename never becomes a path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._made: set[Path] = set()

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store `data` (once: the same bytes are the same file); return its sha256."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.parent not in self._made:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(target.parent)
        try:
            # Already here: touched, so an erasure deleting the last case that held it leaves
            # it for the mail being taken in now (handlers/privacy.py FILE_GRACE).
            os.utime(target)
        except FileNotFoundError:
            tmp = target.with_name(f".{digest}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)  # a reader never sees half a file
        return digest

    def get(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def delete(self, sha256: str, *, unless_touched_after: datetime | None = None) -> bool:
        """Remove a file (its last reference was erased), unless it was written or touched
        after the given moment; True if it was removed."""
        path = self.path(sha256)
        try:
            after = unless_touched_after
            if after is not None and path.stat().st_mtime > after.timestamp():
                return False
            path.unlink()
        except FileNotFoundError:
            return False
        return True
