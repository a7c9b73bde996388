"""Where shipped files live: inside the wheel (daemon/templates) or beside it in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(name: str) -> Path:
    """templates/, migrations/ or samples/: the installed copy, else the checkout's top level."""
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"caseloop is installed without its {name}/ folder")
