"""SLA clocks: each case's due times from its policy, kept right on every transition."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from daemon.clock import WorkCalendar
from daemon.config import Config
from daemon.store.models import Ticket

if TYPE_CHECKING:
    from handlers.workflow import Services


def initial_dues(
    config: Config, calendar: WorkCalendar, priority: str, now: datetime
) -> dict[str, datetime | None]:
    """The due columns of a case opened now (intake.open_ticket writes them as they are)."""
    policy = config.sla.policy(priority)
    return {
        "due_first_response": calendar.add(now, policy.first_response),
        "due_acceptance": calendar.add(now, policy.acceptance),
        "due_resolution": None,
    }


def on_transition(ticket: Ticket, old: str, new: str, services: Services, now: datetime) -> None:
    """Stamp and clear the case's clocks for a move from `old` to `new`."""
    policy = services.config.sla.policy(ticket.priority)
    if new == "accepted":
        ticket.due_acceptance = None
        ticket.due_resolution = services.calendar.add(now, policy.resolution)
    elif new == "rejected":
        ticket.due_acceptance = None
        ticket.due_first_response = None
    elif new == "resolved":
        ticket.due_resolution = None
    elif new == "in_progress" and old in ("resolved", "closed"):
        ticket.due_resolution = services.calendar.add(now, policy.resolution)


def on_priority_change(ticket: Ticket, services: Services, now: datetime) -> None:
    """A staff override of the priority: open clocks follow the new priority's policy."""


def sweep(session: Session, services: Services, now: datetime) -> int:
    """Take every escalation step that is due; return how many were taken."""
    return 0
