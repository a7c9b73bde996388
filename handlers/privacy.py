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
import email
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Executable,
    and_,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.orm import Session, selectinload

from daemon.config import Config
from daemon.store.models import Attachment, OutboxMessage, SourceItem, Ticket, TimelineEntry
from daemon.views import entry_json, iso, outbox_json, ticket_json
from handlers.workflow import OPEN

ERASED = "[erased]"
ERASED_ADDRESS = "erased@erased.invalid"  # never a real mailbox: nothing threads onto it
# An erased attachment's content type: its file is to go (once no unerased case names it),
# then gone: files_to_collect says which, and the clocks runner deletes them, in the sweep
# and after `privacy erase`.
ERASED_TYPE = "application/x-erased"
ERASED_GONE = "application/x-erased; file=gone"
_MESSAGE_KINDS = ("message_in", "message_out", "note")  # their data may quote the person
# Attachments are stored before the mail's case commits, outside any transaction, and storing
# bytes already there touches the file (BlobStore.put). A file touched this recently may
# belong to mail being taken in now, by this process or another: it waits for a later sweep.
FILE_GRACE = timedelta(hours=1)


class Refused(Exception):
    """Erasing is not possible now: cases still being handled, or not a person's address."""


@dataclass
class Erased:
    cases: list[str] = field(default_factory=list)
    entries: int = 0
    originals: int = 0  # raw messages as received
    outbox: int = 0
    attachments: int = 0
    kept_by_sources: list[tuple[str, str]] = field(default_factory=list)  # (source, item key)
    # Message-IDs of the erased outgoing mails that had been sent: their copies outside the
    # database (the Maildir outbox, recipients' servers) are the transport's to remove or list
    mail_sent: list[str] = field(default_factory=list)


def _updated(session: Session, statement: Executable) -> int:
    """Run an UPDATE; how many rows it changed."""
    return cast(CursorResult[Any], session.execute(statement)).rowcount or 0


def _address(email: str) -> str:
    return email.strip().lower()


def person_cases(session: Session, email: str, *, lock: bool = False) -> list[Ticket]:
    """The cases this address complained in, oldest first (locked for an erase)."""
    query = (
        select(Ticket)
        .where(func.lower(Ticket.complainant_email) == _address(email))
        .order_by(Ticket.id)
        .options(selectinload(Ticket.timeline).selectinload(TimelineEntry.attachments))
    )
    return list(session.scalars(query.with_for_update() if lock else query))


def _their_entries_elsewhere(
    session: Session, email: str, cases: list[Ticket]
) -> list[TimelineEntry]:
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


def _unlinked_originals(session: Session, email: str) -> list[SourceItem]:
    """Mail from this address that became no case: ignored (robots) or quarantined.

    Such items name no case, so their raw bytes are searched for the address."""
    needle = _address(email).encode()
    found = session.scalars(
        select(SourceItem)
        .where(SourceItem.ticket_id.is_(None), SourceItem.raw.is_not(None))
        .execution_options(yield_per=500)
    )
    return [item for item in found if item.raw is not None and needle in item.raw.lower()]


def _digests_naming(session: Session, cases: list[Ticket]) -> list[OutboxMessage]:
    """Supervisor digests that list one of these cases (they name cases, subjects, comments)."""
    if not cases:
        return []
    numbers = [t.number.encode() for t in cases]
    since = min(t.created_at for t in cases)
    found = []
    for row in session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.kind == "digest", OutboxMessage.created_at >= since)
        .execution_options(yield_per=100)
    ):
        if row.raw and any(n in _mail_text(row.raw) for n in numbers):
            found.append(row)
    return found


def _mail_text(raw: bytes) -> bytes:
    """The decoded text of a MIME mail (a digest is base64 in parts)."""
    message = email.message_from_bytes(raw)
    parts = [p.get_payload(decode=True) for p in message.walk() if not p.is_multipart()]
    return b"\n".join(p for p in parts if isinstance(p, bytes))


def export_person(session: Session, email: str, zone: ZoneInfo, now: datetime) -> dict[str, Any]:
    """Everything held about one address, as JSON data (SPEC §2 `privacy export`)."""
    address = _address(email)
    cases = person_cases(session, address)
    ids = [t.id for t in cases]
    elsewhere = _their_entries_elsewhere(session, address, cases)
    originals = list(
        session.scalars(
            select(SourceItem).where(
                or_(
                    SourceItem.ticket_id.in_(ids),
                    SourceItem.raw_sha256.in_([e.raw_sha256 for e in elsewhere if e.raw_sha256]),
                )
            )
        )
    ) + _unlinked_originals(session, address)
    mail = session.scalars(
        select(OutboxMessage)
        .where(
            or_(func.lower(OutboxMessage.recipient) == address, OutboxMessage.ticket_id.in_(ids))
        )
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
                "reason": item.reason,
                "at": iso(item.at, zone),
                "sha256": item.raw_sha256,
                "raw_base64": base64.b64encode(item.raw).decode("ascii") if item.raw else None,
            }
            for item in originals
        ],
        # To them, and to staff about their cases (each one's text is in the case timeline).
        "mail": [outbox_json(row, zone) for row in mail],
        "digests_naming_their_cases": [
            outbox_json(row, zone) for row in _digests_naming(session, cases)
        ],
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
            attachment.filename, attachment.content_type = ERASED, ERASED_TYPE
            done.attachments += 1
        done.entries += 1


def _erase_originals(session: Session, items: Iterable[SourceItem], done: Erased) -> None:
    for item in items:
        if item.raw is None:
            continue
        item.raw, item.reason = None, None
        done.kept_by_sources.append((item.source, item.key))
        done.originals += 1


def _blank_mail(session: Session, condition: ColumnElement[bool], why: str, done: Erased) -> int:
    """Outgoing mail matching `condition` keeps its metadata only; any not sent yet never is.
    The Message-IDs of those sent are noted in `done`: copies of them exist outside."""
    done.mail_sent += session.scalars(
        select(OutboxMessage.message_id).where(
            condition, OutboxMessage.status == "sent", OutboxMessage.raw != b""
        )
    ).all()
    mail = update(OutboxMessage).where(condition).execution_options(synchronize_session=False)
    changed = _updated(session, mail.values(raw=b"", subject=ERASED, last_error=None))
    session.execute(
        mail.where(OutboxMessage.status == "queued").values(
            status="failed", last_error=f"not sent: personal data erased ({why})"
        )
    )
    return changed


def erase_cases(
    session: Session, cases: list[Ticket], *, now: datetime, why: str, done: Erased | None = None
) -> Erased:
    """Erase the personal data of these cases (see the module text for what stays)."""
    done = done or Erased()
    if not cases:
        return done
    ids = [t.id for t in cases]
    addresses = {_address(t.complainant_email) for t in cases} - {ERASED_ADDRESS}
    digests = _digests_naming(session, cases)
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
    _erase_originals(
        session, session.scalars(select(SourceItem).where(SourceItem.ticket_id.in_(ids))), done
    )
    if addresses:  # mail to staff about the case keeps its (staff) recipient
        session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.ticket_id.in_(ids),
                func.lower(OutboxMessage.recipient).in_(addresses),
            )
            .values(recipient=ERASED_ADDRESS, recipient_key=ERASED_ADDRESS)
            .execution_options(synchronize_session=False)
        )
    done.outbox += _blank_mail(session, OutboxMessage.ticket_id.in_(ids), why, done)
    if digests:
        done.outbox += _blank_mail(
            session, OutboxMessage.id.in_([d.id for d in digests]), why, done
        )
    return done


def erase_person(session: Session, email: str, now: datetime) -> Erased:
    """SPEC §2 `privacy erase`: the person's cases, their words on other cases, their mail that
    became no case, and mail to them.

    Refused while a case of theirs is still being handled: close or reject it first.
    """
    address = _address(email)
    if address == ERASED_ADDRESS or "@" not in address:
        raise Refused(f"{email!r} is not a person's address")
    cases = person_cases(session, address, lock=True)
    # A resolved case still waits for its survey, which goes to the complainant's address.
    still_open = [t.number for t in cases if t.status in OPEN or t.status == "resolved"]
    if still_open:
        raise Refused(
            f"{address} has cases still being handled: {', '.join(still_open)}; "
            "close or reject them first, then erase"
        )
    why = "at the person's request"
    done = erase_cases(session, cases, now=now, why=why)
    elsewhere = _their_entries_elsewhere(session, address, cases)
    _mask_entries(elsewhere, {address}, done)
    shas = [e.raw_sha256 for e in elsewhere if e.raw_sha256]
    if shas:
        items = session.scalars(select(SourceItem).where(SourceItem.raw_sha256.in_(shas)))
        _erase_originals(session, items, done)
    _erase_originals(session, _unlinked_originals(session, address), done)
    to_them = func.lower(OutboxMessage.recipient) == address
    session.execute(
        update(OutboxMessage)
        .where(to_them)
        .values(recipient=ERASED_ADDRESS, recipient_key=ERASED_ADDRESS)
        .execution_options(synchronize_session=False)
    )
    done.outbox += _blank_mail(
        session,
        and_(OutboxMessage.recipient == ERASED_ADDRESS, OutboxMessage.raw != b""),
        why,
        done,
    )
    return done


@dataclass
class FilesToCollect:
    """The files of erased attachments that no unerased attachment names: the clocks runner
    deletes them (daemon/runners/clocks.py), then `settle` records which are gone."""

    unreferenced: set[str]  # sha256s whose files may go
    touched_after: datetime  # a file touched after this waits (FILE_GRACE)
    pending: list[Attachment] = field(default_factory=list)

    def settle(self, waiting: set[str]) -> None:
        """Every pending attachment's file is gone or left to another case, but those waiting:
        their rows stay pending for the next run (erasing that other case later makes its
        attachments pending again)."""
        for attachment in self.pending:
            if attachment.sha256 not in waiting:
                attachment.content_type = ERASED_GONE


def files_to_collect(session: Session, files_now: datetime, limit: int = 1000) -> FilesToCollect:
    """Which erased attachments' files may be deleted, as of `files_now`: the time on the
    clock file times are written by, so a file touched within FILE_GRACE of it waits."""
    pending = list(
        session.scalars(
            select(Attachment).where(Attachment.content_type == ERASED_TYPE).limit(limit)
        ).all()
    )
    shas = {a.sha256 for a in pending}
    named = set(
        session.scalars(
            select(Attachment.sha256).where(
                Attachment.sha256.in_(shas),
                Attachment.content_type.not_in([ERASED_TYPE, ERASED_GONE]),
            )
        )
        if shas
        else ()
    )
    return FilesToCollect(shas - named, files_now - FILE_GRACE, pending)


def _rejected_at(session: Session) -> Any:
    """Per case, when it was last rejected (its status entry: later mail moves updated_at)."""
    return (
        select(func.max(TimelineEntry.at))
        .where(
            TimelineEntry.ticket_id == Ticket.id,
            TimelineEntry.kind == "status",
            TimelineEntry.data["to"].as_string() == "rejected",
        )
        .scalar_subquery()
    )


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
                    and_(Ticket.status == "rejected", _rejected_at(session) < cutoff),
                ),
            )
            .order_by(Ticket.id)
            .limit(limit)
            .options(selectinload(Ticket.timeline).selectinload(TimelineEntry.attachments))
        )
    )
    return erase_cases(
        session, cases, now=now, why=f"retention ({config.privacy.retain_closed} after closing)"
    )
