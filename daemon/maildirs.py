"""Maildir folders on disk: made when missing, and written the Maildir way (tmp/, then new/).

Shared by the Maildir source (reading), the Maildir outbox (delivering) and `caseloop init`.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path


def ensure_maildir(path: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)


def deliver_to_maildir(path: Path, data: bytes, name: str | None = None) -> Path:
    """Write a message the Maildir way: tmp/ first, then an atomic rename into new/."""
    ensure_maildir(path)
    name = name or f"{time.time():.6f}.{os.getpid()}_{os.urandom(4).hex()}.{socket.gethostname()}"
    tmp = path / "tmp" / name
    tmp.write_bytes(data)
    target = path / "new" / name
    os.replace(tmp, target)
    return target
