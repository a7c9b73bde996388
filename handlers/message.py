"""A parsed mail as every handler sees it: decoded headers, text and attachments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Attachment:
    filename: str  # a safe basename, never a path
    content_type: str  # lower-case
    payload: bytes


@dataclass(frozen=True)
class ParsedMessage:
    raw: bytes  # exactly what came in, for quarantine and re-parsing
    message_id: str | None  # "<local@domain>"
    in_reply_to: tuple[str, ...]  # message ids "<...>"
    references: tuple[str, ...]  # message ids "<...>", oldest first
    from_name: str  # decoded display name, "" if none
    from_address: str  # as given; never empty, always has "@"
    reply_to: str | None
    to: tuple[str, ...]  # addresses only
    cc: tuple[str, ...]
    return_path: str | None  # None without the header; "" for the null sender "<>"
    subject: str  # fully decoded, unfolded; "" if none
    date: datetime | None  # aware, UTC; None if missing or unreadable
    text: str  # the text/plain part, else the HTML laid out as text; "\n" line ends
    html: str | None  # the HTML as sent, decoded: escape it before showing it (LESSONS 5)
    attachments: tuple[Attachment, ...]
    headers: Mapping[str, str]  # lower-case name -> decoded value of the first occurrence
    defects: tuple[str, ...]  # what had to be guessed or repaired, for people to read
    # the header from_address came from: "from", else "reply-to" or "sender" (a mail with no
    # usable From); only a From address can be vouched for by DKIM/DMARC alignment
    sender_header: str = "from"

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        """Pickled as its fields with the headers as a dict (a read-only view does not pickle):
        mail prepared in the worker process (daemon/prepare.py) comes back this way."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["headers"] = dict(self.headers)
        return _unpickled, (values,)


def _unpickled(values: dict[str, Any]) -> ParsedMessage:
    return ParsedMessage(**{**values, "headers": MappingProxyType(values["headers"])})
