"""Statistics over a period (PROCEDURE §8, `caseloop report`): counts, timeliness, satisfaction."""

from __future__ import annotations

from datetime import date

from sqlalchemy.orm import Session

from daemon.config import Config


def render(
    session: Session, config: Config, since: date | None, until: date | None, fmt: str
) -> str:
    """The report for [since, until] (local dates, inclusive) as text, csv or html."""
    return ""
