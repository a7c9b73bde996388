"""The supervisor digest: what is overdue, urgent or waiting on a decision, with a chart."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from handlers.workflow import Services


def print_digest(session: Session, services: Services, now: datetime) -> str:
    """The digest's plain-text part as of now (`caseloop digest --print`)."""
    return ""


def send_digest(session: Session, services: Services, now: datetime) -> int:
    """Queue the digest to every supervisor now (`caseloop digest --send`); how many queued."""
    return 0


def scheduled(session: Session, services: Services, now: datetime) -> int:
    """The digest of the latest `digest_cron` slot, once per slot across restarts."""
    return 0
