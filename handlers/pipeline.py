"""The ordered steps one incoming message goes through, in one list."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from daemon.clock import Clock, WorkCalendar
from daemon.config import Config
from daemon.store.models import Ticket, TimelineEntry
from handlers.notify import Templates
from handlers.parse import ParsedMessage


@dataclass(frozen=True)
class Incoming:
    """One raw item a source hands in: its bytes and the key the source dedupes it by."""

    source: str
    key: str
    raw: bytes
    label: str  # how an operator finds it: a file name, "INBOX uid 42"


class BlobWriter(Protocol):
    def put(self, data: bytes) -> str:
        """Store bytes content-addressed; return their sha256."""
        ...


@dataclass
class Context:
    """What the handlers know and decide about one incoming item."""

    config: Config
    session: Session
    clock: Clock
    calendar: WorkCalendar
    templates: Templates
    blobs: BlobWriter
    item: Incoming
    now: datetime
    message: ParsedMessage | None = None
    raw_sha256: str | None = None
    automatic: str | None = None  # why this is robot mail that must never be answered
    ticket: Ticket | None = None
    new_ticket: bool = False
    entry: TimelineEntry | None = None
    outcome: str = "pending"  # ticket | entry | duplicate | quarantined | ignored
    reason: str | None = None
    notes: list[str] = field(default_factory=list)  # what the operator's summary reports

    def stop(self, outcome: str, reason: str) -> None:
        self.outcome, self.reason = outcome, reason

    @property
    def stopped(self) -> bool:
        return self.outcome != "pending"


class Handler(Protocol):
    name: str
    description: str

    def process(self, ctx: Context) -> None: ...


def build_pipeline() -> list[Handler]:
    """The whole flow at a glance; each step may stop it by setting an outcome."""
    from handlers.acknowledge import Acknowledge
    from handlers.classify import Classify
    from handlers.intake import Deduplicate, OpenOrThread, Parse
    from handlers.loopguard import LoopGuard
    from handlers.threading import FindCase

    return [
        Parse(),  # bytes -> ParsedMessage, or quarantine with the reason
        Deduplicate(),  # a Message-ID we already hold is one entry, not two
        LoopGuard(),  # robots, lists, bounces, ourselves: never answered
        FindCase(),  # In-Reply-To/References, then the [NUMBER] subject tag
        OpenOrThread(),  # a new case, or an entry on the case found
        Classify(),  # category and priority from the rules
        Acknowledge(),  # the templated acknowledgement for a new case
    ]


def run_pipeline(
    pipeline: list[Handler], ctx: Context, on_step: Callable[[str], None] | None = None
) -> Context:
    for handler in pipeline:
        if ctx.stopped:
            break
        if on_step:
            on_step(handler.name)
        handler.process(ctx)
    if not ctx.stopped:
        ctx.outcome = "ticket" if ctx.new_ticket else "entry"
    return ctx
