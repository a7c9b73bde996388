"""Logs an operator can grep: one line per event, key=value, addresses masked."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any


class _KeyValue(logging.Filter):
    """Other libraries' lines (alembic's "Running upgrade 0001 -> 0002, ...") in our form."""

    _UPGRADE = re.compile(r"Running (upgrade|downgrade) (\S*) -> (\S+), (.*)")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("alembic"):
            text = record.getMessage()
            step = self._UPGRADE.fullmatch(text)
            if step:
                how, old, new, what = step.groups()
                fields = f"from={old or '-'} to={new} what={_quote(what)}"
                record.msg, record.args = f"event=migrate.{how} {fields}", ()
            else:
                record.msg, record.args = f"event=migrate.note message={_quote(text)}", ()
        return True


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(_KeyValue())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def mask(address: str | None) -> str:
    """z***@example.cn: enough to tell people apart in a log, not enough to harvest."""
    if not address:
        return "-"
    local, at, domain = address.partition("@")
    return f"{local[:1]}***{at}{domain}" if at else f"{local[:1]}***"


def _quote(value: Any) -> str:
    text = str(value).replace("\n", " ")
    return f'"{text}"' if (" " in text or "=" in text or not text) else text


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log `event=<name> key=value ...`; None values are left out."""
    if not logger.isEnabledFor(level):
        return
    parts = [f"event={name}"] + [f"{k}={_quote(v)}" for k, v in fields.items() if v is not None]
    logger.log(level, " ".join(parts))
