"""Robot mail that must never be answered: RFC 3834 signals, lists, bounces, ourselves."""

from __future__ import annotations

import re

from daemon.config import Config
from handlers.parse import ParsedMessage
from handlers.pipeline import BlobWriter, Prepared

_ROBOT_LOCALPARTS = re.compile(r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply)$", re.I)


def automatic_reason(msg: ParsedMessage, own_addresses: frozenset[str]) -> str | None:
    """Why this mail is automatic (never to be answered), or None for a person's mail."""
    sender = msg.from_address.lower()
    if sender in own_addresses:
        return "mail from our own address"
    if msg.return_path == "":
        return "null sender (Return-Path: <>)"
    if _ROBOT_LOCALPARTS.match(sender.partition("@")[0]):
        return f"robot sender {sender.partition('@')[0]}"
    headers = msg.headers
    auto = headers.get("auto-submitted", "").strip().lower()
    if auto and not auto.startswith("no"):
        return f"Auto-Submitted: {auto}"
    precedence = headers.get("precedence", "").strip().lower()
    if precedence in ("bulk", "junk", "list"):
        return f"Precedence: {precedence}"
    for name in ("list-id", "list-unsubscribe"):
        if name in headers:
            return f"mailing list ({name})"
    return None


class LoopGuard:
    name = "loopguard"
    description = "mark robot mail so nothing automatic ever answers it"

    def process(self, prep: Prepared, config: Config, blobs: BlobWriter) -> None:
        assert prep.message is not None
        prep.automatic = automatic_reason(prep.message, config.own_addresses)
