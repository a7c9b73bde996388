"""Outbox -> SMTP, or a Maildir when no [smtp] is configured; runs only on committed rows."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import smtplib
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from daemon import log as logfmt
from daemon.clock import Clock
from daemon.config import Config, SmtpConfig
from daemon.maildirs import ensure_maildir
from daemon.store import coordination
from daemon.store.models import OutboxMessage

log = logging.getLogger("caseloop.sender")

# How long an instance's claim on the outbox rows it is about to send lasts: a crashed
# instance's rows are sent by another after this (see send_due).
CLAIM_FOR = timedelta(minutes=5)
MAX_ATTEMPTS = 18  # about two days of backoff (10 s doubling to 6 h) before a 4xx mail is given up


class DeliveryError(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class Transport(Protocol):
    # how many deliveries may share one "sent" commit: what a crash could make us resend
    commit_every: int
    max_unmarked: int  # delivered mails whose "sent" may wait for a busy database
    overlaps_intake: bool  # delivering beside intake pays off (run --once)

    def open(self) -> None: ...
    def deliver(self, sender: str, recipient: str, message_id: str, raw: bytes) -> None: ...
    def close(self) -> None: ...
    def describe(self) -> str: ...
    def forget(self, message_ids: list[str]) -> Forgotten: ...


@dataclass
class Forgotten:
    """What erasing delivered mail did outside the database (privacy erase, retention)."""

    removed: int = 0  # copies deleted from our own Maildir outbox
    beyond_reach: list[str] = field(default_factory=list)  # Message-IDs delivered elsewhere
    where: str = ""  # where those are: a recipient's server, a reader of the outbox


class MaildirTransport:
    """Writes each mail once into <data_dir>/outbox; a resend of the same mail overwrites itself."""

    commit_every = 200  # a resend overwrites itself, so batching costs nothing
    max_unmarked = 200
    overlaps_intake = False  # local file writes: in turn, or aside for a long backlog

    def __init__(self, path: Path) -> None:
        self.path = path

    def open(self) -> None:
        ensure_maildir(self.path)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"maildir {self.path}"

    @staticmethod
    def _name(message_id: str) -> str:
        return f"caseloop-{hashlib.sha256(message_id.encode()).hexdigest()[:24]}"

    def forget(self, message_ids: list[str]) -> Forgotten:
        """Delete these mails from the outbox folder (new/ and cur/, whatever flags a reader
        gave them); those not found were taken away by whoever reads the folder."""
        done = Forgotten(where=f"taken from {self.path} by its reader")
        for message_id in message_ids:
            name = self._name(message_id)
            found = [self.path / "new" / name, *self.path.glob(f"cur/{name}:*")]
            removed = False
            for path in found:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed = True
            if removed:
                done.removed += 1
            else:
                done.beyond_reach.append(message_id)
        return done

    def deliver(self, sender: str, recipient: str, message_id: str, raw: bytes) -> None:
        name = self._name(message_id)
        final = f"{self.path}/new/{name}"
        # Already written (a resend after a crash)? In new/, or seen by a reader in cur/.
        if (
            os.path.exists(final)
            or os.path.exists(f"{self.path}/cur/{name}:2,S")
            or os.path.exists(f"{self.path}/cur/{name}:2,")
        ):
            return
        tmp = f"{self.path}/tmp/{name}.{os.getpid()}.{threading.get_ident()}"  # one writer's
        with open(tmp, "wb") as out:
            out.write(raw)
        os.replace(tmp, final)  # the Maildir way: a reader never sees half a mail


class SmtpTransport:
    """One SMTP connection reused across a batch; 4xx retried later, 5xx failed for good."""

    commit_every = 10  # a crash after the server's 250 resends at most this many...
    max_unmarked = 100  # ...or this many while another writer holds the database
    overlaps_intake = True  # mostly waiting for the server: worth a thread of its own

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._conn: smtplib.SMTP | None = None

    def describe(self) -> str:
        return f"smtp {self.config.host}:{self.config.port} ({self.config.security})"

    def forget(self, message_ids: list[str]) -> Forgotten:
        """Mail handed to the SMTP server is out of our reach: listed, not removed."""
        return Forgotten(
            beyond_reach=list(message_ids),
            where=f"delivered through {self.config.host}:{self.config.port} to the recipients",
        )

    def open(self) -> None:
        cfg = self.config
        try:
            if cfg.security == "tls":
                conn: smtplib.SMTP = smtplib.SMTP_SSL(
                    cfg.host, cfg.port, timeout=cfg.timeout, context=ssl.create_default_context()
                )
            else:
                conn = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
                if cfg.security == "starttls":
                    conn.starttls(context=ssl.create_default_context())
            if cfg.username:
                conn.login(cfg.username, cfg.password.read() or "")
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"SMTP login refused: {exc.smtp_code} {exc.smtp_error!r}", permanent=False
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(
                f"cannot reach SMTP server {cfg.host}:{cfg.port}: {exc}", permanent=False
            ) from exc
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._conn.quit()
            self._conn = None

    def deliver(self, sender: str, recipient: str, message_id: str, raw: bytes) -> None:
        if self._conn is None:
            self.open()
        assert self._conn is not None
        try:
            refused = self._conn.sendmail(sender, [recipient], raw)
        except smtplib.SMTPRecipientsRefused as exc:
            code, reply = exc.recipients.get(recipient, (550, b"refused"))
            raise DeliveryError(
                f"{code} {reply.decode(errors='replace')}", permanent=code >= 500
            ) from exc
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(
                f"{exc.smtp_code} {_text(exc.smtp_error)}",
                permanent=exc.smtp_code >= 500,
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            self._conn = None
            raise DeliveryError(f"connection lost: {exc}", permanent=False) from exc
        if refused:
            code, reply = refused[recipient]
            raise DeliveryError(f"{code} {reply.decode(errors='replace')}", permanent=code >= 500)


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


def make_transport(config: Config) -> Transport:
    if config.smtp is not None:
        return SmtpTransport(config.smtp)
    return MaildirTransport(config.outbox_dir)


def backoff(attempts: int) -> timedelta:
    """10 s after the first failure, doubling to at most 6 h (MAX_ATTEMPTS: about two days)."""
    return timedelta(seconds=min(10 * 2 ** max(attempts - 1, 0), 6 * 3600))


def send_due(
    sessions: sessionmaker[Session],
    reads: sessionmaker[Session],
    transport: Transport,
    clock: Clock,
    sender: str,
    limit: int = 500,
    try_sessions: sessionmaker[Session] | None = None,
    holder: str = "",
    claim_for: timedelta = CLAIM_FOR,
    consumer_hours: Callable[[datetime], bool] = lambda now: True,
) -> tuple[int, int]:
    """Deliver queued mail that is due, recording "sent" soon after the server's answer.

    Returns (sent, not sent). `consumer_hours(now)`: whether mail held to the consumer's
    hours may go now (checked when it is sent, however long ago it was queued). The rows
    are first claimed for `holder` (one instance: see
    daemon/store/coordination.claim_outbox), so no row is sent by two instances; rows left
    unsent (the claim ran short, or a crash) are given back. Sent marks are committed every
    `transport.commit_every` mails; with `try_sessions` (which fail at once when another
    writer holds the database), a busy database does not stall delivery: marks wait, up to
    `transport.max_unmarked`. A crash between delivery and commit resends those mails once
    their claim has lapsed; the resend carries the same Message-ID (and the Maildir transport
    skips it).
    """
    holder = holder or coordination.new_instance_id()
    now = clock.now()
    until = now + claim_for
    window_open = consumer_hours(now)  # mail held to the consumer's hours waits outside them
    with reads() as session:  # a read first: an idle outbox never takes the write lock
        if not coordination.outbox_due(session, now, window_open):
            return 0, 0
    with sessions.begin() as session:
        due = coordination.claim_outbox(session, holder, now, until, limit, window_open)
    if not due:
        return 0, 0
    try:
        transport.open()
    except DeliveryError as exc:
        logfmt.event(log, "outbox.unreachable", logging.WARNING, error=exc, queued=len(due))
        _record_failure(sessions, list(due), str(exc), False, clock.now())
        return 0, len(due)
    sent = failed = 0
    unmarked: list[int] = []  # delivered, "sent" not yet committed
    done: set[int] = set()  # delivered or failed: the rest goes back unclaimed
    # Stop taking rows while the claim still covers one more delivery at its slowest.
    last_start = until - claim_for / 5
    try:
        for start in range(0, len(due), transport.commit_every):
            if clock.now() >= last_start:
                break
            ids = due[start : start + transport.commit_every]
            with reads() as session:
                rows = session.execute(
                    select(
                        OutboxMessage.id,
                        OutboxMessage.recipient,
                        OutboxMessage.message_id,
                        OutboxMessage.raw,
                    )
                    .where(
                        OutboxMessage.id.in_(ids),
                        OutboxMessage.status == "queued",
                        OutboxMessage.claimed_by == holder,
                    )
                    .order_by(OutboxMessage.id)
                ).all()
            for row_id, recipient, message_id, raw in rows:
                if clock.now() >= last_start:
                    break
                done.add(row_id)
                try:
                    transport.deliver(sender, recipient, message_id, raw)
                except DeliveryError as exc:
                    failed += 1
                    _record_failure(sessions, [row_id], str(exc), exc.permanent, clock.now())
                    logfmt.event(
                        log,
                        "outbox.failed",
                        logging.WARNING,
                        id=row_id,
                        to=logfmt.mask(recipient),
                        permanent=exc.permanent,
                        error=exc,
                    )
                    continue
                unmarked.append(row_id)
            must_wait = try_sessions is None or len(unmarked) >= transport.max_unmarked
            if unmarked and _mark_sent(
                sessions if must_wait else try_sessions, unmarked, clock.now()
            ):
                sent += len(unmarked)
                unmarked = []
    finally:
        if unmarked and _mark_sent(sessions, unmarked, clock.now()):
            sent += len(unmarked)
        transport.close()
        left = [row_id for row_id in due if row_id not in done]
        if left:
            with sessions.begin() as session:
                coordination.unclaim(session, holder, left)
    return sent, failed


def _mark_sent(sessions: sessionmaker[Session] | None, ids: list[int], now: datetime) -> bool:
    """Commit "sent" for these rows; False when a nowait session found the database busy."""
    assert sessions is not None
    try:
        with sessions.begin() as session:
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id.in_(ids))
                .values(
                    status="sent",
                    sent_at=now,
                    last_error=None,
                    attempts=OutboxMessage.attempts + 1,
                    claimed_until=None,  # claimed_by stays: the instance that sent it
                )
            )
    except OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        return False
    return True


def _record_failure(
    sessions: sessionmaker[Session], ids: list[int], error: str, permanent: bool, now: datetime
) -> None:
    with sessions.begin() as session:
        for row in session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(ids))):
            row.attempts += 1
            row.last_error = error
            row.claimed_by = row.claimed_until = None
            if permanent or row.attempts >= MAX_ATTEMPTS:
                row.status = "failed"
            else:
                row.next_attempt_at = now + backoff(row.attempts)


def check_smtp(config: SmtpConfig) -> str:
    """What check-config reports for the SMTP server: reachable and, if set, logged in."""
    transport = SmtpTransport(config)
    try:
        transport.open()
    except DeliveryError as exc:
        return f"FAILED: {exc}"
    except TimeoutError:
        return "FAILED: timed out"
    transport.close()
    return "ok" + (", login accepted" if config.username else "")
