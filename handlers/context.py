"""The types every handler shares: a prepared item, the context a deciding step sees, services.

This is the bottom floor of handlers/: it imports no handler but the parsed-message type, so
any step can import it and nothing here can tie steps into a loop. The pipelines that chain
the steps are in handlers/pipeline.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from daemon.clock import Clock, WorkCalendar
from daemon.config import Config
from daemon.items import Incoming
from daemon.store.models import Ticket
from handlers.message import ParsedMessage

MAX_REASON = 2000  # characters of the reason an item is set aside for, as kept and shown


@dataclass(frozen=True)
class StoredAttachment:
    """An attachment already written to the blob store."""

    filename: str
    content_type: str
    size: int
    sha256: str


class BlobWriter(Protocol):
    def put(self, data: bytes) -> str:
        """Store bytes content-addressed; return their sha256."""
        ...


@dataclass(frozen=True)
class Bounce:
    """A delivery failure report about mail we sent (handlers/bounce.py reads them)."""

    permanent: bool  # False for a delay warning: the server is still trying
    recipients: tuple[str, ...]  # lower-case addresses that failed; may be empty
    original_message_id: str | None  # "<...>" of the mail of ours that failed
    reason: str  # one line for people: the server's answer, else the report's subject


@dataclass
class Prepared:
    """What the database-free steps found out about one item (picklable)."""

    item: Incoming
    message: ParsedMessage | None = None
    raw_sha256: str | None = None
    attachments: list[StoredAttachment] = field(default_factory=list)
    new_text: str = ""  # what the sender wrote, quoted history and signature cut off
    # What Classify reads when the text holds more than the consumer's words: a form row's
    # subject, respondent, description and demand, not its labelled name, phone and row lines.
    words: str = ""
    automatic: str | None = None  # why this is robot mail that must never be answered
    bounce: Bounce | None = None  # a delivery report about mail we sent
    category: str = "other"  # for a new case, from the rules
    priority: str = "normal"
    classified_by: str | None = None  # "model: category 0.91" when the desk's model decided
    language: str = "zh-CN"  # of the consumer's own words
    channel: str = "email"  # email | form
    # Registration fields known beyond the mail itself (a form row's columns): phone,
    # respondent, order_number, purchase_date, amount, demand; unmapped columns under "extra".
    fields: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # registration essentials still to ask for
    # `caseloop import`: taken in as of its own date, sending nothing (the backfill pipeline).
    backfill: bool = False
    outcome: str = "pending"  # ticket | entry | duplicate | quarantined | ignored | skipped
    reason: str | None = None
    notes: list[str] = field(default_factory=list)  # what the operator's summary reports

    def stop(self, outcome: str, reason: str) -> None:
        if len(reason) > MAX_REASON:  # an exception may quote megabytes of what it choked on
            reason = reason[: MAX_REASON - 1] + "…"
        self.outcome, self.reason = outcome, reason

    @property
    def stopped(self) -> bool:
        return self.outcome != "pending"


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str


class Renderer(Protocol):
    """The mail templates (handlers/notify.py Templates): what a handler renders mail with."""

    def render(self, kind: str, language: str, **context: Any) -> RenderedMail: ...

    def sender(self, language: str) -> str: ...


# Called by handlers/workflow.apply_transition after every move of a case, with
# (ticket, old status, new status, services, now): the SLA clocks and the survey follow it.
TransitionHook = Callable[[Ticket, str, str, "Services", datetime], None]


@dataclass(frozen=True)
class Services:
    """What a handler needs besides the case and the session: config, calendar, templates,
    and the hooks every status change runs (handlers/pipeline.py services() wires them)."""

    config: Config
    calendar: WorkCalendar
    templates: Renderer
    transition_hooks: tuple[TransitionHook, ...]


@dataclass
class Context:
    """A prepared item plus the database: what the deciding steps see and record."""

    prep: Prepared
    services: Services
    session: Session
    clock: Clock
    now: datetime
    ticket: Ticket | None = None
    new_ticket: bool = False
    # An imported case its complainant wrote on live: from now on it is handled like a new one.
    woken: bool = False
    consumer_wrote: bool = False  # the complainant's own message, on a case they had opened
    entry_id: int | None = None  # the timeline entry this message became
    # What steps before OpenOrThread decided for the case it is about to open ("priority",
    # "extra"): a decision about the case, not a rewrite of what the prepare stage found.
    opening: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Config:
        return self.services.config

    @property
    def calendar(self) -> WorkCalendar:
        return self.services.calendar

    @property
    def templates(self) -> Renderer:
        return self.services.templates

    @property
    def message(self) -> ParsedMessage:
        assert self.prep.message is not None, "deciding steps run only on parsed mail"
        return self.prep.message

    @property
    def stopped(self) -> bool:
        return self.prep.stopped

    def stop(self, outcome: str, reason: str) -> None:
        self.prep.stop(outcome, reason)


class PrepareStep(Protocol):
    name: str
    description: str

    def process(self, prep: Prepared, config: Config, blobs: BlobWriter) -> None: ...


class DecideStep(Protocol):
    name: str
    description: str

    def process(self, ctx: Context) -> None: ...
