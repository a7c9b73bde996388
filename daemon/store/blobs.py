"""Content-addressed files (raw mail, attachments) under the data folder, named by sha256."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path


class BlobStore:
    """<root>/ab/<sha256>: the sender's filename never becomes a path.

    Writes run on a small thread pool (file creation is slow I/O that releases the GIL);
    `flush()` waits for all of them and must be called before the rows naming them commit.
    """

    def __init__(self, root: Path, writers: int = 4) -> None:
        self.root = root
        self._made: set[Path] = set()
        self._pool = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="blobs")
        self._pending: list[Future[None]] = []

    def path(self, sha256: str) -> Path:
        if len(sha256) != 64 or not all(c in "0123456789abcdef" for c in sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Start storing `data`; return its sha256 at once."""
        digest = hashlib.sha256(data).hexdigest()
        target = self.path(digest)
        if target.parent not in self._made:
            target.parent.mkdir(parents=True, exist_ok=True)
            self._made.add(target.parent)
        self._pending.append(self._pool.submit(_write, target, data))
        return digest

    def flush(self) -> None:
        """Wait until every started write is on disk (raises the first write error)."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()

    def get(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def close(self) -> None:
        self.flush()
        self._pool.shutdown()


def _write(target: Path, data: bytes) -> None:
    if target.exists():
        return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
