"""The ordered steps one incoming message goes through, in one place.

Two stages: PREPARE needs only the bytes and the config (parse, loop guard, classify) and may
run in worker processes; DECIDE needs the database (duplicates, threading, the case, the
acknowledgement) and runs in the one transaction that also records the source's dedupe key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session

from daemon.clock import Clock, WorkCalendar
from daemon.config import Config
from daemon.store.models import Ticket
from handlers.notify import Templates
from handlers.parse import ParsedMessage

if TYPE_CHECKING:
    from handlers.bounce import Bounce


@dataclass(frozen=True)
class Incoming:
    """One raw item a source hands in: its bytes and the key the source dedupes it by."""

    source: str
    key: str
    raw: bytes
    label: str  # how an operator finds it: a file name, "INBOX uid 42", "web.csv row 7"
    kind: str = "mail"  # "mail": raw RFC 5322 bytes; "form": a web-form row as JSON


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
    language: str = "zh-CN"  # of the consumer's own words
    channel: str = "email"  # email | form
    # Registration fields known beyond the mail itself (a form row's columns): phone,
    # respondent, order_number, purchase_date, amount, demand; unmapped columns under "extra".
    fields: dict[str, Any] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # registration essentials still to ask for
    # `caseloop import`: taken in as of its own date, sending nothing (decide_steps(backfill)).
    backfill: bool = False
    outcome: str = "pending"  # ticket | entry | duplicate | quarantined | ignored | skipped
    reason: str | None = None
    notes: list[str] = field(default_factory=list)  # what the operator's summary reports

    def stop(self, outcome: str, reason: str) -> None:
        self.outcome, self.reason = outcome, reason

    @property
    def stopped(self) -> bool:
        return self.outcome != "pending"


@dataclass(frozen=True)
class Services:
    """What a handler needs besides the case and the session: config, calendar, templates."""

    config: Config
    calendar: WorkCalendar
    templates: Templates


@dataclass
class Context:
    """A prepared item plus the database: what the deciding steps see and record."""

    prep: Prepared
    config: Config
    session: Session
    clock: Clock
    calendar: WorkCalendar
    templates: Templates
    now: datetime
    ticket: Ticket | None = None
    new_ticket: bool = False
    # An imported case its complainant wrote on live: from now on it is handled like a new one.
    woken: bool = False
    entry_id: int | None = None  # the timeline entry this message became

    @property
    def message(self) -> ParsedMessage:
        assert self.prep.message is not None, "deciding steps run only on parsed mail"
        return self.prep.message

    @property
    def services(self) -> Services:
        return Services(self.config, self.calendar, self.templates)

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


def prepare_steps(kind: str = "mail") -> list[PrepareStep]:
    from handlers.classify import Classify
    from handlers.forms import ParseFormRow
    from handlers.intake import Parse
    from handlers.loopguard import LoopGuard
    from handlers.register import Register

    if kind == "form":
        return [
            ParseFormRow(),  # a web-form row (JSON) -> message, registration fields, missing
            LoopGuard(),  # a row giving our own or a robot address is never answered
            Classify(),  # category and priority from the consumer's words
        ]
    return [
        Parse(),  # bytes -> ParsedMessage, attachments stored, or quarantine with the reason
        LoopGuard(),  # robots, lists, bounces, ourselves: never answered
        Classify(),  # language, category and priority from the consumer's words
        Register(),  # registration fields (order, amount, phone...) and what is missing
    ]


def decide_steps(*, backfill: bool = False) -> list[DecideStep]:
    """The deciding steps, in order. A backfill (`caseloop import`) leaves out those that send
    mail or act on what the mail says: old staff mail is a record, not a command; an old
    survey answer changes nothing now; nobody is acknowledged, alerted or assigned."""
    from handlers.acknowledge import Acknowledge
    from handlers.assign import Assign
    from handlers.bounce import RecordBounce
    from handlers.intake import Deduplicate, OpenOrThread
    from handlers.register import GroupComplaint
    from handlers.staffmail import StaffMail
    from handlers.survey import FindSurveyCase, SurveyAnswer
    from handlers.threading import FindCase

    steps: list[DecideStep] = [
        Deduplicate(),  # a Message-ID we already hold is one entry, not two
        RecordBounce(),  # a bounce marks our outgoing mail and lands on its case, for staff
        FindCase(),  # In-Reply-To/References, the [NUMBER] subject tag, the Reply-To token
        FindSurveyCase(),  # a one-click survey answer names its case by the survey token
        StaffMail(),  # staff with proof: commands applied, text relayed; without: third party
        GroupComplaint(),  # many complainants against one respondent: urgent
        OpenOrThread(),  # a new case, or an entry on the case found
        SurveyAnswer(),  # the complainant's answer to the survey closes or reopens the case
        Acknowledge(),  # the acknowledgement, or the request for missing registration details
        Assign(),  # routing to the least-loaded staff member; urgent cases alert at once
    ]
    if backfill:
        sending = (StaffMail, SurveyAnswer, Acknowledge, Assign)
        steps = [step for step in steps if not isinstance(step, sending)]
    return steps


def prepare(
    item: Incoming, config: Config, blobs: BlobWriter, steps: list[PrepareStep]
) -> Prepared:
    """Run the database-free steps on one item."""
    prep = Prepared(item=item, language=config.tickets.default_language)
    for step in steps:
        if prep.stopped:
            break
        step.process(prep, config, blobs)
    return prep


def decide(ctx: Context, steps: list[DecideStep]) -> Context:
    for step in steps:
        if ctx.stopped:
            break
        step.process(ctx)
    if not ctx.stopped:
        ctx.prep.outcome = "ticket" if ctx.new_ticket else "entry"
    return ctx
