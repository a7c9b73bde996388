"""`caseloop run` against a real Dovecot (IDLE) and a real aiosmtpd: outages lose nothing.

A complaint APPENDed to the mailbox is acknowledged at the SMTP server within seconds (IDLE, not
the 30 s poll). Then Dovecot restarts and the SMTP server goes away: mail APPENDed meanwhile is
taken in once Dovecot is back, its ack is queued, and it reaches the SMTP server when that comes
back (on the outbox's retry schedule). SIGTERM ends the daemon with exit 0.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from cli_run import start_caseloop
from dovecot import Dovecot

MESSAGE_ID = re.compile(rb"(?im)^(message-id|in-reply-to):[ \t]*(<[^>\r\n]*>)")
ACK_WITHIN = 5.0  # seconds from APPEND to the ack at the SMTP server, with IDLE
RETRY_WITHIN = 120.0  # the outbox retries a mail refused by connection after 60 s


class Sink:
    """aiosmtpd handler: keeps (In-Reply-To, Message-ID) of every mail it takes."""

    def __init__(self) -> None:
        self.received: list[tuple[str | None, str | None]] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        head = re.split(rb"\r?\n\r?\n", envelope.content, maxsplit=1)[0]
        found = {m.group(1).lower(): m.group(2).decode() for m in MESSAGE_ID.finditer(head)}
        with self.lock:
            self.received.append((found.get(b"in-reply-to"), found.get(b"message-id")))
        return "250 OK"

    def acks_for(self, complaint_id: str) -> list[str | None]:
        with self.lock:
            return [mid for reply_to, mid in self.received if reply_to == complaint_id]


def complaint(i: int) -> tuple[str, bytes]:
    msg = EmailMessage()
    msg["From"] = f"consumer{i}@example.net"
    msg["To"] = "support@example.com"
    msg["Subject"] = f"投诉 {i}：电饭煲无法加热"
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<imap-daemon-{i}@example.net>"
    msg.set_content(f"第 {i} 号投诉：电饭煲使用三天后无法加热，要求退货退款。")
    return msg["Message-ID"], msg.as_bytes()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def query(db: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql, args).fetchall()
    except sqlite3.Error:  # not migrated yet
        return []


def outbox_row(db: Path, complaint_id: str) -> tuple[Any, ...] | None:
    """(status, attempts, last_error, message_id) of the ack of the case opened by a complaint."""
    rows = query(
        db,
        "select o.status, o.attempts, o.last_error, o.message_id from outbox o"
        " join timeline_entries t on t.ticket_id = o.ticket_id"
        " where t.kind = 'message_in' and t.message_id = ?",
        complaint_id,
    )
    assert len(rows) <= 1, rows
    return rows[0] if rows else None


@pytest.mark.slow
def test_idle_intake_survives_a_dovecot_restart_and_an_smtp_outage(
    tmp_path: Path, imap_box: Dovecot
) -> None:
    sink = Sink()
    port = free_port()
    smtp = Controller(sink, hostname="127.0.0.1", port=port)
    smtp.start()
    (tmp_path / "imap-password").write_text(imap_box.password + "\n")
    config = tmp_path / "caseloop.toml"
    config.write_text(
        'data_dir = "caseloop-data"\n'
        # A 30 s poll: an ack within seconds can only come from IDLE.
        '[intake]\npoll_interval = "30s"\n[delivery]\ninterval = "1s"\n'
        "[[mailboxes]]\n"
        f'name = "imap"\ntype = "imap"\naddress = "{imap_box.user}"\n'
        f'host = "{imap_box.host}"\nport = {imap_box.port}\nsecurity = "none"\n'
        'password_file = "imap-password"\nidle = true\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
    )
    db = tmp_path / "caseloop-data" / "caseloop.db"
    log = tmp_path / "daemon.log"
    with log.open("wb") as err:
        proc = start_caseloop(
            "run", config=config, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        # Up, and the first poll done: from now on only IDLE can notice mail quickly.
        assert wait_for(lambda: query(db, "select last_poll_at from source_state"), 30), (
            log.read_text()
        )
        time.sleep(0.5)
        first_id, first = complaint(1)
        appended = time.monotonic()
        imap_box.append(first)
        assert wait_for(lambda: sink.acks_for(first_id), ACK_WITHIN), log.read_text()
        print(f"ack of the first complaint after {time.monotonic() - appended:.2f} s")

        # The outage: the SMTP server goes away, Dovecot restarts (the IDLE connection drops).
        smtp.stop()
        imap_box.restart()
        second_id, second = complaint(2)
        outage = time.monotonic()
        imap_box.append(second)
        # Taken in once the daemon is reconnected; the ack is queued and its delivery fails.
        assert wait_for(lambda: (outbox_row(db, second_id) or (None, 0))[1] >= 1, 30), (
            log.read_text()
        )
        print(f"second complaint taken in, delivery failed after {time.monotonic() - outage:.2f} s")
        status, _, error, second_ack = outbox_row(db, second_id)  # type: ignore[misc]
        assert status == "queued" and "cannot reach SMTP server" in error, (status, error)

        # The SMTP server is back on the same port.
        smtp = Controller(sink, hostname="127.0.0.1", port=port)
        smtp.start()
        # New mail goes straight through (IDLE is back after the restart) ...
        third_id, third = complaint(3)
        appended = time.monotonic()
        imap_box.append(third)
        assert wait_for(lambda: sink.acks_for(third_id), ACK_WITHIN), log.read_text()
        print(f"ack of the third complaint after {time.monotonic() - appended:.2f} s")
        # ... and the ack queued during the outage follows on its retry schedule.
        assert wait_for(lambda: sink.acks_for(second_id), RETRY_WITHIN), log.read_text()
        assert sink.acks_for(second_id) == [second_ack]
        print(f"ack of the second complaint {time.monotonic() - outage:.1f} s after its APPEND")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(Exception):  # it may be the stopped one
                smtp.stop()
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "event=daemon.stopped" in text and "Traceback" not in text, text
    assert text.count("event=imap.unreachable") == 1, text  # logged once per outage
    assert "event=imap.reconnected" in text, text

    # Nothing lost, nothing twice: three cases, three acks sent, the mailbox empty.
    assert query(db, "select count(*) from tickets") == [(3,)]
    assert query(db, "select status, count(*) from outbox group by 1") == [("sent", 3)]
    for complaint_id in (first_id, second_id, third_id):
        assert len(sink.acks_for(complaint_id)) == 1, complaint_id
    assert imap_box.messages("INBOX") == []
    assert len(imap_box.messages(f"caseloop{imap_box.separator()}processed")) == 3
