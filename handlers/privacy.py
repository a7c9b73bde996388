"""Personal data (PROCEDURE "Privacy", PIPL): all we hold about one person, erasing it, and
erasing it from closed cases once `[privacy] retain_closed` has passed.

A case's personal data is the complainant's name, address and phone, the registration details
in `extra`, the subject and text of every message and note, the survey comment, the raw mail as
received, the attachments, and the mail we rendered to send. Erasing keeps what the statistics
count (PROCEDURE §8: type, cause, respondent, timeliness, satisfaction): the number, status,
category, priority, channel, language, respondent, every date and due time, the satisfaction
score and outcome, and the timeline's shape (who of the staff did what, when).

Copies outside the database (a Maildir source's cur/, an IMAP processed folder, a form export
in processed/) are not ours to rewrite: erasing names them for the operator.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import CursorResult, Executable, and_, func, or_, select, true, update
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.store.models import Attachment, OutboxMessage, SourceItem, Ticket, TimelineEntry
from daemon.views import entry_json, iso, outbox_json, ticket_json
from handlers.workflow import OPEN

ERASED = "[erased]"
ERASED_ADDRESS = "erased@erased.invalid"  # never a real mailbox: nothing threads onto it
_MESSAGE_KINDS = ("message_in", "message_out", "note")  # their data may quote the person


class OpenCases(Exception):
    """The person still has cases being handled; their data is needed for that."""


@dataclass
class Erased:
    cases: list[str] = field(default_factory=list)
    entries: int = 0
    originals: int = 0  # raw messages as received
    outbox: int = 0
    attachments: int = 0
    blobs: set[str] = field(default_factory=set)  # attachment files to delete after commit
    kept_by_sources: list[tuple[str, str]] = field(default_factory=list)  # (source, item key)


def _updated(session: Session, statement: Executable) -> int:
    """Run an UPDATE; how many rows it changed."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount or 0


def _address(email: str) -> str:
    return email.strip().lower()


def person_cases(session: Session, email: str) -> list[Ticket]:
    """The cases this address complained in, oldest first."""
    return list(
        session.scalars(
            select(Ticket)
            .where(func.lower(Ticket.complainant_email) == _address(email))
            .order_by(Ticket.id)
        )
    )


def _their_entries_elsewhere(session: Session, email: str, cases: list[Ticket]) -> list[Any]:
    """Entries this address wrote on other people's cases (a third party's mail)."""
    own = [t.id for t in cases]
    return list(
        session.scalars(
            select(TimelineEntry)
            .where(func.lower(TimelineEntry.actor) == _address(email))
            .where(TimelineEntry.ticket_id.not_in(own) if own else true())
            .order_by(TimelineEntry.id)
        )
    )


def export_person(session: Session, email: str, zone: ZoneInfo, now: datetime) -> dict[str, Any]:
    """Everything held about one address, as JSON data (SPEC §2 `privacy export`)."""
    address = _address(email)
    cases = person_cases(session, address)
    elsewhere = _their_entries_elsewhere(session, address, cases)
    originals = session.execute(
        select(SourceItem).where(
            or_(
                SourceItem.ticket_id.in_([t.id for t in cases]),
                SourceItem.raw_sha256.in_([e.raw_sha256 for e in elsewhere if e.raw_sha256]),
            )
        )
    ).scalars()
    mail = session.scalars(
        select(OutboxMessage)
        .where(func.lower(OutboxMessage.recipient) == address)
        .order_by(OutboxMessage.id)
    )
    numbers = {t.id: t.number for t in session.scalars(
        select(Ticket).where(Ticket.id.in_({e.ticket_id for e in elsewhere}))
    )}  # fmt: skip
    return {
        "email": address,
        "exported_at": iso(now, zone),
        "cases": [
            {**ticket_json(t, zone, timeline=True), "survey_comment": t.satisfaction_comment}
            for t in cases
        ],
        "entries_on_other_cases": [
            {"case": numbers.get(e.ticket_id), **entry_json(e, zone)} for e in elsewhere
        ],
        "originals": [
            {
                "source": item.source,
                "key": item.key,
                "outcome": item.outcome,
                "at": iso(item.at, zone),
                "sha256": item.raw_sha256,
                "raw_base64": base64.b64encode(item.raw).decode("ascii") if item.raw else None,
            }
            for item in originals
        ],
        "mail_to_them": [outbox_json(row, zone) for row in mail],
    }


def _mask_entries(entries: Iterable[TimelineEntry], addresses: set[str], done: Erased) -> None:
    for entry in entries:
        if entry.subject is not None:
            entry.subject = ERASED
        if entry.text is not None:
            entry.text = ERASED
        if entry.actor.lower() in addresses:
            entry.actor = ERASED_ADDRESS
        if entry.kind in _MESSAGE_KINDS:
            entry.data = {}
        for attachment in entry.attachments:
            attachment.filename = ERASED
            done.blobs.add(attachment.sha256)
            done.attachments += 1
        done.entries += 1


def _erase_originals(session: Session, condition: Any, done: Erased) -> None:
    for source, key in session.execute(
        select(SourceItem.source, SourceItem.key).where(condition, SourceItem.raw.is_not(None))
    ):
        done.kept_by_sources.append((source, key))
    done.originals += _updated(
        session,
        update(SourceItem)
        .where(condition, SourceItem.raw.is_not(None))
        .values(raw=None, reason=None)
        .execution_options(synchronize_session=False),
    )


def erase_cases(
    session: Session, cases: list[Ticket], *, now: datetime, why: str, done: Erased | None = None
) -> Erased:
    """Erase the personal data of these cases (see the module text for what stays)."""
    done = done or Erased()
    if not cases:
        return done
    ids = [t.id for t in cases]
    addresses = {_address(t.complainant_email) for t in cases} - {ERASED_ADDRESS}
    for ticket in cases:
        _mask_entries(ticket.timeline, addresses, done)
        ticket.complainant_name = None
        ticket.complainant_email = ERASED_ADDRESS
        ticket.complainant_phone = None
        ticket.subject = ERASED
        ticket.satisfaction_comment = None
        ticket.survey_token = None
        ticket.extra = {}
        ticket.erased_at = now
        ticket.timeline.append(
            TimelineEntry(at=now, kind="note", actor="caseloop", internal=True,
                          text=f"personal data erased: {why}", data={"erased": True})
        )  # fmt: skip
        done.cases.append(ticket.number)
    _erase_originals(session, SourceItem.ticket_id.in_(ids), done)
    mail = update(OutboxMessage).execution_options(synchronize_session=False)
    # Mail not yet sent is not sent now: what it would say is gone.
    session.execute(
        mail.where(OutboxMessage.ticket_id.in_(ids), OutboxMessage.status == "queued").values(
            status="failed", last_error=f"not sent: personal data erased ({why})"
        )
    )
    done.outbox += _updated(
        session, mail.where(OutboxMessage.ticket_id.in_(ids)).values(raw=b"", subject=ERASED)
    )
    if addresses:  # mail to staff about the case keeps its (staff) recipient
        session.execute(
            mail.where(
                OutboxMessage.ticket_id.in_(ids),
                func.lower(OutboxMessage.recipient).in_(addresses),
            ).values(recipient=ERASED_ADDRESS)
        )
    return done


def erase_person(session: Session, email: str, now: datetime) -> Erased:
    """SPEC §2 `privacy erase`: the person's cases, their words on other cases, mail to them.

    Refused (OpenCases) while a case of theirs is still being handled: close or reject it first.
    """
    address = _address(email)
    cases = person_cases(session, address)
    # A resolved case still waits for its survey, which goes to the complainant's address.
    still_open = [t.number for t in cases if t.status in OPEN or t.status == "resolved"]
    if still_open:
        raise OpenCases(
            f"{address} has cases still being handled: {', '.join(still_open)}; "
            "close or reject them first, then erase"
        )
    done = erase_cases(session, cases, now=now, why="at the person's request")
    elsewhere = _their_entries_elsewhere(session, address, cases)
    _mask_entries(elsewhere, {address}, done)
    shas = [e.raw_sha256 for e in elsewhere if e.raw_sha256]
    if shas:
        _erase_originals(session, SourceItem.raw_sha256.in_(shas), done)
    done.outbox += _updated(
        session,
        update(OutboxMessage)
        .where(func.lower(OutboxMessage.recipient) == address)
        .values(recipient=ERASED_ADDRESS, raw=b"", subject=ERASED)
        .execution_options(synchronize_session=False),
    )
    session.flush()
    done.blobs = unreferenced(session, done.blobs)
    return done


def unreferenced(session: Session, shas: set[str]) -> set[str]:
    """Of these attachment files, the ones no case still holds unerased."""
    if not shas:
        return set()
    kept = session.scalars(
        select(Attachment.sha256).where(Attachment.sha256.in_(shas), Attachment.filename != ERASED)
    )
    return shas - set(kept)


def retention_sweep(session: Session, config: Config, now: datetime, limit: int = 200) -> Erased:
    """Closed and rejected cases past `[privacy] retain_closed`: their personal data erased,
    at most `limit` cases a run (the sweep comes back for the rest)."""
    cutoff = now - config.privacy.retain_closed.as_timedelta()
    cases = list(
        session.scalars(
            select(Ticket)
            .where(
                Ticket.erased_at.is_(None),
                or_(
                    and_(Ticket.status == "closed", Ticket.closed_at < cutoff),
                    and_(Ticket.status == "rejected", Ticket.updated_at < cutoff),
                ),
            )
            .order_by(Ticket.id)
            .limit(limit)
        )
    )
    done = erase_cases(
        session, cases, now=now, why=f"retention ({config.privacy.retain_closed} after closing)"
    )
    session.flush()
    done.blobs = unreferenced(session, done.blobs)
    return done
