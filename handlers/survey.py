"""The satisfaction survey after resolution (PROCEDURE §7): send, read answers, close or appeal."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from daemon.store.models import Ticket
from handlers.pipeline import Context

if TYPE_CHECKING:
    from handlers.workflow import Services


def on_transition(ticket: Ticket, old: str, new: str, services: Services, now: datetime) -> None:
    """Schedule the survey when a case is resolved; forget it when the case moves on."""


def sweep(session: Session, services: Services, now: datetime) -> int:
    """Send the surveys that are due and close the cases whose survey went unanswered."""
    return 0


class FindSurveyCase:
    name = "find-survey-case"
    description = "a one-click survey answer names its case by the survey token in the address"

    def process(self, ctx: Context) -> None:
        return


class SurveyAnswer:
    name = "survey-answer"
    description = "the complainant's answer to a survey (or a reply after resolution) decides"

    def process(self, ctx: Context) -> None:
        return
