"""What a source hands in: one raw item, the key it is deduplicated by, and how to find it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Incoming:
    """One raw item a source hands in: its bytes and the key the source dedupes it by."""

    source: str
    key: str
    raw: bytes
    label: str  # how an operator finds it: a file name, "INBOX uid 42", "web.csv row 7"
    kind: str = "mail"  # "mail": raw RFC 5322 bytes; "form": a web-form row as JSON
