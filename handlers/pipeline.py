"""The ordered steps an incoming item goes through, one named list per pipeline, in one place.

Two stages: PREPARE needs only the bytes and the config (parse, loop guard, classify); DECIDE
needs the database (duplicates, threading, the case, the acknowledgement) and runs in the one
transaction that also records the source's dedupe key. The shared types the steps pass along
are in handlers/context.py; this module only chains the steps (after Mailman's
core/pipelines.py) and wires the hooks every status change runs.
"""

from __future__ import annotations

import time

from daemon.clock import WorkCalendar
from daemon.config import Config
from daemon.items import Incoming
from handlers import sla, survey
from handlers.acknowledge import Acknowledge
from handlers.assign import Assign
from handlers.bounce import RecordBounce
from handlers.classify import Classify
from handlers.context import (
    BlobWriter,
    Context,
    DecideStep,
    Prepared,
    PrepareStep,
    Renderer,
    Services,
)
from handlers.forms import ParseFormRow
from handlers.group import GroupAlert, GroupComplaint
from handlers.intake import Deduplicate, OpenOrThread
from handlers.loopguard import LoopGuard
from handlers.parse import Parse
from handlers.register import Register
from handlers.regulator import ReportToRegulator
from handlers.staffmail import StaffMail
from handlers.staffnotice import TellAssignee
from handlers.survey import FindSurveyCase, SurveyAnswer
from handlers.threading import FindCase

# -- prepare: bytes -> Prepared, no database ------------------------------------------------

MAIL_PREPARE: tuple[PrepareStep, ...] = (
    Parse(),  # bytes -> ParsedMessage, attachments stored, or quarantine with the reason
    LoopGuard(),  # robots, lists, bounces, ourselves: never answered
    Classify(),  # language, category and priority from the consumer's words
    Register(),  # registration fields (order, amount, phone...) and what is missing
)

FORM_PREPARE: tuple[PrepareStep, ...] = (
    ParseFormRow(),  # a web-form row (JSON) -> message, registration fields, missing
    LoopGuard(),  # a row giving our own or a robot address is never answered
    Classify(),  # category and priority from the consumer's words
)

# -- decide: in the item's transaction -------------------------------------------------------

LIVE_DECIDE: tuple[DecideStep, ...] = (
    Deduplicate(),  # a Message-ID we already hold is one entry, not two
    RecordBounce(),  # a bounce marks our outgoing mail and lands on its case, for staff
    FindCase(),  # In-Reply-To/References, the [NUMBER] subject tag, the Reply-To token
    FindSurveyCase(),  # a one-click survey answer names its case by the survey token
    StaffMail(),  # staff with proof: commands applied, text relayed; without: third party
    GroupComplaint(),  # the case about to open, alike with others' against its respondent
    OpenOrThread(),  # a new case, or an entry on the case found
    GroupAlert(),  # a group formed or grown: the supervisors hear of it once a day
    SurveyAnswer(),  # the complainant's answer to the survey closes or reopens the case
    Acknowledge(),  # the acknowledgement, or the request for missing registration details
    Assign(),  # routing to the least-loaded staff member; urgent cases alert at once
    TellAssignee(),  # the consumer wrote again: the assignee hears of it (an hour's burst: once)
    ReportToRegulator(),  # personal safety or a major loss: reported to the regulator, once
)

# `caseloop import`: old mail is a record, not a command. Old staff mail is not acted on, an
# old survey answer changes nothing now, and nobody is acknowledged, alerted or assigned.
BACKFILL_DECIDE: tuple[DecideStep, ...] = (
    Deduplicate(),
    RecordBounce(),
    FindCase(),
    FindSurveyCase(),
    GroupComplaint(),
    OpenOrThread(),
    GroupAlert(),  # remembers the case for the batch; sends nothing for imported mail
)

PREPARE = {"mail": MAIL_PREPARE, "form": FORM_PREPARE}


def services(config: Config, calendar: WorkCalendar, templates: Renderer) -> Services:
    """The services handlers get, with the hooks every status change runs, in this order:
    the SLA clocks, then the survey (which reads the clocks' stamps)."""
    return Services(
        config=config,
        calendar=calendar,
        templates=templates,
        transition_hooks=(sla.on_transition, survey.on_transition),
    )


def prepare(item: Incoming, config: Config, blobs: BlobWriter) -> Prepared:
    """Run the database-free steps of the item's pipeline (by its kind: mail or form)."""
    prep = Prepared(item=item, language=config.tickets.default_language)
    budget = config.intake.message_time_budget.as_timedelta().total_seconds()
    started = time.perf_counter()  # elapsed work, not the time of day: no clock needed
    for step in PREPARE[item.kind]:
        if prep.stopped:
            break
        step.process(prep, config, blobs)
        took = time.perf_counter() - started
        if took > budget and not prep.stopped:
            prep.stop(
                "quarantined",
                f"took {took:.1f} s, over message_time_budget ({budget:g} s), "
                f"in step {step.name!r}",
            )
    return prep


def decide(ctx: Context) -> Context:
    """Run the deciding steps: the backfill pipeline for an imported item, else the live one."""
    for step in BACKFILL_DECIDE if ctx.prep.backfill else LIVE_DECIDE:
        if ctx.stopped:
            break
        step.process(ctx)
    if not ctx.stopped:
        ctx.prep.outcome = "ticket" if ctx.new_ticket else "entry"
    return ctx
