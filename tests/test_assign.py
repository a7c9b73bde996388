"""The Assign step called directly: routing by category, least loaded first; urgent alerts once."""

from __future__ import annotations

from sqlalchemy import select

from daemon.store.models import OutboxMessage, Ticket, TimelineEntry
from handlers.assign import Assign
from handlers.context import Context
from handlers.intake import OpenOrThread

ROUTING = """
[[staff]]
address = "Wang@example.com"
groups = ["quality"]
language = "en"

[[staff]]
address = "zhao@example.com"
groups = ["quality", "delivery"]

[[staff]]
address = "qian@example.com"
groups = ["delivery"]

[[routing]]
category = "product_quality"
group = "quality"

[[routing]]
category = "logistics"
group = "delivery"
"""

ALERTS = """
[escalation]
supervisors = ["lead@example.com"]
urgent_notify = ["compliance@example.com", "LEAD@example.com"]
"""


def new_case(step_ctx, sender: str, category: str, priority: str = "normal") -> Context:  # noqa: ANN001
    """A context with a new case of `category` just opened, as the live pipeline has it."""
    ctx = step_ctx(step_ctx.mail(sender, "The kettle leaks."))
    ctx.prep.category, ctx.prep.priority = category, priority
    OpenOrThread().process(ctx)
    assert ctx.new_ticket and ctx.ticket is not None
    return ctx


def outbox(ctx: Context) -> list[tuple[str, str]]:
    rows = ctx.session.scalars(select(OutboxMessage).order_by(OutboxMessage.id))
    return [(r.kind, r.recipient) for r in rows]


def test_a_new_case_goes_to_its_category_group_first_member_on_a_tie(step_ctx) -> None:
    step_ctx.configure(ROUTING)
    ctx = new_case(step_ctx, "li@example.org", "product_quality")

    Assign().process(ctx)

    case = ctx.session.get(Ticket, ctx.ticket.id)  # type: ignore[union-attr]
    assert case is not None and ctx.ticket is case
    assert case.assignee == "wang@example.com"  # both have none open: the config's order
    note = ctx.session.scalars(select(TimelineEntry).where(TimelineEntry.kind == "note")).one()
    assert note.internal and note.actor == "caseloop"
    assert note.text == "assignee: None -> wang@example.com (routing: product_quality -> quality)"
    assert outbox(ctx) == [("assigned", "wang@example.com")]
    row = ctx.session.scalars(select(OutboxMessage)).one()
    assert row.subject == f"[{case.number}] Assigned to you: Kettle"  # in Wang's language
    assert row.intent.startswith(f"assigned:{case.number}:wang@example.com:")


def test_the_least_loaded_member_gets_the_case_counting_open_cases_only(step_ctx) -> None:
    step_ctx.configure(ROUTING)
    first = new_case(step_ctx, "a@example.org", "product_quality")
    Assign().process(first)  # Wang: one open case
    second = new_case(step_ctx, "b@example.org", "product_quality")
    Assign().process(second)
    assert second.ticket is not None and second.ticket.assignee == "zhao@example.com"

    # Zhao's case closes: Wang now has one open case and Zhao none.
    second.ticket.status = "closed"
    third = new_case(step_ctx, "c@example.org", "product_quality")
    Assign().process(third)
    assert third.ticket is not None and third.ticket.assignee == "zhao@example.com"


def test_each_category_is_routed_to_its_own_group(step_ctx) -> None:
    step_ctx.configure(ROUTING)
    busy = new_case(step_ctx, "a@example.org", "logistics")
    Assign().process(busy)
    assert busy.ticket is not None and busy.ticket.assignee == "zhao@example.com"
    ctx = new_case(step_ctx, "b@example.org", "logistics")
    Assign().process(ctx)
    assert ctx.ticket is not None and ctx.ticket.assignee == "qian@example.com"  # never Wang


def test_a_category_without_a_rule_and_no_routing_at_all_leave_the_case_unassigned(
    step_ctx,
) -> None:
    step_ctx.configure(ROUTING)
    ctx = new_case(step_ctx, "a@example.org", "service_attitude")
    Assign().process(ctx)
    assert ctx.ticket is not None and ctx.ticket.assignee is None
    assert outbox(ctx) == []
    notes = select(TimelineEntry).where(TimelineEntry.kind == "note")
    assert ctx.session.scalars(notes).all() == []


def test_no_routing_configured_leaves_every_case_unassigned(step_ctx) -> None:
    ctx = new_case(step_ctx, "a@example.org", "product_quality")
    Assign().process(ctx)
    case = ctx.session.get(Ticket, ctx.ticket.id)  # type: ignore[union-attr]
    assert case is not None and case.assignee is None
    assert outbox(ctx) == []


def test_an_urgent_case_alerts_each_supervisor_and_urgent_notify_address_once(step_ctx) -> None:
    step_ctx.configure(ALERTS)
    ctx = new_case(step_ctx, "a@example.org", "product_quality", priority="urgent")

    Assign().process(ctx)
    Assign().process(ctx)  # run again: nothing is queued twice

    assert sorted(outbox(ctx)) == [
        ("urgent", "compliance@example.com"),
        ("urgent", "lead@example.com"),
    ]
    number = ctx.ticket.number  # type: ignore[union-attr]
    intents = set(ctx.session.scalars(select(OutboxMessage.intent)))
    assert intents == {f"urgent:{number}:{a}@example.com" for a in ("compliance", "lead")}
    assert ctx.ticket is not None and ctx.ticket.assignee is None  # no routing: alerts only


def test_an_urgent_case_is_routed_and_alerted(step_ctx) -> None:
    step_ctx.configure(ROUTING + ALERTS)
    ctx = new_case(step_ctx, "a@example.org", "product_quality", priority="urgent")
    Assign().process(ctx)
    assert ctx.ticket is not None and ctx.ticket.assignee == "wang@example.com"
    assert sorted(outbox(ctx)) == [
        ("assigned", "wang@example.com"),
        ("urgent", "compliance@example.com"),
        ("urgent", "lead@example.com"),
    ]


def test_a_normal_case_alerts_nobody(step_ctx) -> None:
    step_ctx.configure(ALERTS)
    ctx = new_case(step_ctx, "a@example.org", "product_quality", priority="high")
    Assign().process(ctx)
    assert outbox(ctx) == []


def test_robot_mail_and_replies_on_known_cases_are_not_routed(step_ctx) -> None:
    step_ctx.configure(ROUTING + ALERTS)
    ctx = new_case(step_ctx, "a@example.org", "product_quality", priority="urgent")
    ctx.prep.automatic = "Auto-Submitted: auto-replied"
    Assign().process(ctx)
    assert ctx.ticket is not None and ctx.ticket.assignee is None and outbox(ctx) == []

    reply = step_ctx(step_ctx.mail("a@example.org", "Any news?"), ctx.ticket.id)
    assert reply.ticket is not None and not reply.new_ticket
    Assign().process(reply)
    assert reply.ticket.assignee is None and outbox(reply) == []
