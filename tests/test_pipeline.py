"""The step lists hold what handlers/pipeline.py says; decide stops at the first stop; hooks run."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from daemon.store.models import Ticket, TimelineEntry
from handlers import pipeline, sla, survey
from handlers.acknowledge import Acknowledge
from handlers.assign import Assign
from handlers.context import Context, Services
from handlers.intake import OpenOrThread, attach
from handlers.regulator import ReportToRegulator
from handlers.staffmail import StaffMail
from handlers.staffnotice import TellAssignee
from handlers.survey import SurveyAnswer
from handlers.workflow import apply_transition

LISTS = {
    "MAIL_PREPARE": pipeline.MAIL_PREPARE,
    "FORM_PREPARE": pipeline.FORM_PREPARE,
    "LIVE_DECIDE": pipeline.LIVE_DECIDE,
    "BACKFILL_DECIDE": pipeline.BACKFILL_DECIDE,
}


def test_backfill_has_no_step_that_sends_mail_or_acts_on_commands() -> None:
    acting = (StaffMail, SurveyAnswer, Acknowledge, Assign, TellAssignee, ReportToRegulator)
    assert [s.name for s in pipeline.BACKFILL_DECIDE if isinstance(s, acting)] == []
    # Those are the live list's only extra steps: the rest run in the same order.
    live = [s.name for s in pipeline.LIVE_DECIDE if not isinstance(s, acting)]
    assert [s.name for s in pipeline.BACKFILL_DECIDE] == live


def test_the_live_list_acknowledges_and_assigns_after_the_case_is_opened() -> None:
    names = [s.name for s in pipeline.LIVE_DECIDE]
    assert names[0] == "deduplicate"  # a duplicate stops before anything is looked up
    assert names.index("find-case") < names.index("staff-mail") < names.index("open-or-thread")
    assert names.index("open-or-thread") < names.index("acknowledge") < names.index("assign")


@pytest.mark.parametrize("list_name", LISTS)
def test_every_step_has_a_unique_name_and_a_one_line_description(list_name: str) -> None:
    steps = LISTS[list_name]
    assert steps
    for step in steps:
        assert isinstance(step.name, str) and step.name.strip(), step
        assert step.name == step.name.strip().lower() and " " not in step.name, step.name
        text = step.description
        assert isinstance(text, str) and text.strip() and "\n" not in text, step.name
        assert callable(step.process), step.name
    names = [s.name for s in steps]
    assert len(names) == len(set(names)), names


def test_prepare_picks_the_list_by_the_items_kind() -> None:
    assert pipeline.PREPARE == {"mail": pipeline.MAIL_PREPARE, "form": pipeline.FORM_PREPARE}


class Recording:
    """A stand-in step that records its turn and may stop the item."""

    def __init__(self, name: str, seen: list[str], stop: bool = False) -> None:
        self.name, self.description, self.seen, self.stops = name, f"{name} step", seen, stop

    def process(self, ctx: Context) -> None:
        self.seen.append(self.name)
        if self.stops:
            ctx.stop("ignored", f"{self.name} said so")


def test_decide_stops_at_the_first_step_that_stops_the_item(
    step_ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    steps = (Recording("a", seen), Recording("b", seen, stop=True), Recording("c", seen))
    monkeypatch.setattr(pipeline, "LIVE_DECIDE", steps)
    ctx = step_ctx(step_ctx.mail("li@example.org", "It leaks."))

    pipeline.decide(ctx)

    assert seen == ["a", "b"]
    assert (ctx.prep.outcome, ctx.prep.reason) == ("ignored", "b said so")


def test_decide_runs_the_backfill_list_for_an_imported_item(
    step_ctx, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    monkeypatch.setattr(pipeline, "LIVE_DECIDE", (Recording("live", seen),))
    monkeypatch.setattr(pipeline, "BACKFILL_DECIDE", (Recording("backfill", seen),))
    ctx = step_ctx(step_ctx.mail("li@example.org", "It leaks."))
    ctx.prep.backfill = True
    pipeline.decide(ctx)
    assert seen == ["backfill"] and ctx.prep.outcome == "entry"  # no step opened a case


def test_decide_sets_the_outcome_ticket_for_a_new_case_entry_for_a_reply_or_the_stop(
    step_ctx,
) -> None:
    first = step_ctx(step_ctx.mail("li@example.org", "It leaks.", message_id="<one@x.org>"))
    assert pipeline.decide(first) is first
    assert first.prep.outcome == "ticket" and first.ticket is not None and first.new_ticket
    number, case_id = first.ticket.number, first.ticket.id

    again = step_ctx(step_ctx.mail("li@example.org", "It leaks.", message_id="<one@x.org>"))
    pipeline.decide(again)
    assert again.prep.outcome == "duplicate" and again.ticket is not None
    assert again.ticket.id == case_id

    reply = step_ctx(step_ctx.mail("li@example.org", "Any news?", f"Re: [{number}] Kettle"))
    pipeline.decide(reply)
    assert reply.prep.outcome == "entry" and not reply.new_ticket
    assert reply.ticket is not None and reply.ticket.id == case_id
    count = (
        select(func.count()).select_from(TimelineEntry).where(TimelineEntry.kind == "message_in")
    )
    assert reply.session.scalar(count) == 2  # the duplicate added nothing


def test_services_wire_the_sla_hook_then_the_survey_hook(step_ctx) -> None:
    app = step_ctx.app
    wired = pipeline.services(app.config, app.calendar, app.templates)
    assert wired.transition_hooks == (sla.on_transition, survey.on_transition)
    assert (wired.config, wired.calendar, wired.templates) == (
        app.config,
        app.calendar,
        app.templates,
    )


def opened_case(step_ctx) -> tuple[Context, Ticket]:  # noqa: ANN001
    ctx = step_ctx(step_ctx.mail("li@example.org", "It leaks."))
    OpenOrThread().process(ctx)
    assert ctx.ticket is not None
    return ctx, attach(ctx.session, ctx.ticket)


def test_apply_transition_runs_the_hooks_accepting_stamps_the_resolution_clock(
    step_ctx,
) -> None:
    ctx, case = opened_case(step_ctx)
    assert case.due_resolution is None and case.due_acceptance is not None
    step_ctx.clock.move(timedelta(hours=2))
    now = step_ctx.clock.now()

    apply_transition(ctx.session, ctx.services, case, "accepted", actor="x", now=now)

    policy = ctx.config.sla.policy(case.priority)
    assert case.due_resolution == ctx.calendar.add(now, policy.resolution)
    assert case.due_acceptance is None and case.first_response_at == now

    later = now + timedelta(days=1)
    apply_transition(ctx.session, ctx.services, case, "resolved", actor="x", now=later)
    assert case.due_resolution is None  # the SLA hook cleared it ...
    assert case.survey_due_at is not None and case.survey_token  # ... the survey hook ran


def test_apply_transition_runs_exactly_the_hooks_it_is_given_in_order(step_ctx) -> None:
    ctx, case = opened_case(step_ctx)
    calls: list[tuple[str, str, str]] = []

    def first(ticket, old, new, services, now) -> None:  # noqa: ANN001
        assert services is bare and now == ctx.now and ticket is case
        calls.append(("first", old, new))

    def second(ticket, old, new, services, now) -> None:  # noqa: ANN001
        calls.append(("second", old, new))

    bare: Services = dataclasses.replace(ctx.services, transition_hooks=(first, second))
    apply_transition(ctx.session, bare, case, "accepted", actor="x", now=ctx.now)
    assert calls == [("first", "received", "accepted"), ("second", "received", "accepted")]
    assert case.due_resolution is None  # the SLA clocks move only through their hook
