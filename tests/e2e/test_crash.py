"""Exactly-once under kill -9: `caseloop run` killed at random moments and restarted, then
`run --once` to the end.

Every message must end as exactly one case, nothing lost, nothing taken in twice, and every case
must have exactly one acknowledgement intent in the outbox. The Maildir outbox never writes a
Message-ID twice; over SMTP a crash between the server's 250 and our commit may resend a mail,
but only ever with the Message-ID of its outbox row.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_caseloop, start_caseloop
from dovecot import Dovecot
from relay import message_id

N = 300  # messages
KILLS = 8  # kill -9 per scenario
SEED = 20261124


def complaint(i: int, rng: random.Random) -> bytes:
    msg = EmailMessage()
    zh = rng.random() < 0.7
    msg["From"] = f"consumer{i}@example.net"
    msg["To"] = "support@example.com"
    msg["Subject"] = Header(
        "投诉：商品问题" if zh else "Complaint about my order", "utf-8"
    ).encode()
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<crash-{i}@example.net>"
    body = (
        f"我购买的电饭煲使用三天后无法加热，要求退货退款。订单号 2026{i:08d}。"
        if zh
        else f"The blender of order 2026{i:08d} stopped working after a week. I want a refund."
    )
    msg.set_content(body, charset="gb18030" if zh and i % 5 == 0 else "utf-8")
    return msg.as_bytes()


class Progress:
    """Work visible in the daemon's database: items taken in plus mails marked sent."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self) -> int:
        if not self.path.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5) as db:
                return int(
                    db.execute(
                        "select (select count(*) from source_items)"
                        " + (select count(*) from outbox where status = 'sent')"
                    ).fetchone()[0]
                )
        except sqlite3.Error:  # not migrated yet
            return 0


def kill_at_random_moments(config: Path, log: Path, kills: int, rng: random.Random) -> list[str]:
    """Start `caseloop run`, kill -9 it, again and again; returns what each kill interrupted."""
    progress = Progress(config.parent / "caseloop-data" / "caseloop.db")
    moments: list[str] = []
    for _ in range(kills):
        before = progress()
        with log.open("ab") as err:
            proc = start_caseloop(
                "run",
                config=config,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            if rng.random() < 0.25 or before >= 2 * N:  # (all done: nothing left to wait for)
                # Any instant from the start: imports, migration, connecting, the first batch.
                time.sleep(rng.uniform(0.0, 2.0))
                moment = "early"
            else:
                # Some instant of the work: wait for the first commit of this life, then a bit.
                deadline = time.monotonic() + 20
                while progress() == before and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, 0.12))
                moment = "working"
            assert proc.poll() is None, f"the daemon exited {proc.returncode}: {log.read_text()}"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        moments.append(f"{moment}@{progress() - before}")
    return moments


def run_once(config: Path, log: Path) -> None:
    with log.open("ab") as err:
        done = run_caseloop(
            "run",
            "--once",
            config=config,
            check=False,
            timeout=60,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    assert done.returncode == 0, log.read_text()


def check_database(db_path: Path, sent: set[str]) -> set[str]:
    """Exactly one case per message and one ack per case; returns the outbox Message-IDs."""
    with sqlite3.connect(db_path) as db:
        outcomes = Counter(
            dict(db.execute("select outcome, count(*) from source_items group by 1"))
        )
        why = db.execute(
            "select outcome, reason, count(*) from source_items where outcome != 'ticket'"
            " group by 1, 2 limit 5"
        ).fetchall()
        assert outcomes == {"ticket": N}, (outcomes, why)  # nothing duplicate, set aside or lost
        assert db.execute("select count(*) from tickets").fetchone()[0] == N
        incoming = Counter(
            mid
            for (mid,) in db.execute(
                "select message_id from timeline_entries where kind = 'message_in'"
            )
        )
        lost, unexpected = sorted(sent - set(incoming)), sorted(set(incoming) - sent)
        assert not lost and not unexpected, f"lost: {lost[:5]}, unexpected: {unexpected[:5]}"
        assert max(incoming.values()) == 1
        assert not db.execute(
            "select ticket_id from timeline_entries where kind = 'message_in'"
            " group by ticket_id having count(*) > 1"
        ).fetchall()
        assert not db.execute(
            "select ticket_id from outbox group by ticket_id having count(*) > 1"
        ).fetchall(), "a case has more than one outbox row"
        # the short generated complaints name no business: each gets the request for details
        # (the acknowledgement that also asks for them); exactly one, sent, per case
        assert dict(
            db.execute("select kind || ':' || status, count(*) from outbox group by 1")
        ) == {"request_info:sent": N}
        ids = [mid for (mid,) in db.execute("select message_id from outbox")]
    assert len(set(ids)) == N
    return set(ids)


@pytest.mark.slow
def test_maildir_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    config = tmp_path / "caseloop.toml"
    config.write_text(
        'data_dir = "caseloop-data"\n'
        '[intake]\npoll_interval = "1s"\nbatch_size = 20\n[delivery]\ninterval = "1s"\n'
    )
    inbox = tmp_path / "caseloop-data" / "inbox"
    for sub in ("tmp", "new", "cur"):
        (inbox / sub).mkdir(parents=True)
    sent = set()
    for i in range(N):
        raw = complaint(i, rng)
        sent.add(message_id(raw))
        (inbox / "tmp" / f"{i:05d}.crash").write_bytes(raw)
        os.rename(inbox / "tmp" / f"{i:05d}.crash", inbox / "new" / f"{i:05d}.crash")
    log = tmp_path / "daemon.log"

    moments = kill_at_random_moments(config, log, KILLS, rng)
    run_once(config, log)

    outbox_ids = check_database(tmp_path / "caseloop-data" / "caseloop.db", sent)
    assert os.listdir(inbox / "new") == [], moments
    assert len(os.listdir(inbox / "cur")) == N
    files = sorted((tmp_path / "caseloop-data" / "outbox" / "new").iterdir())
    written = Counter(message_id(f.read_bytes()) for f in files)
    assert max(written.values()) == 1, "the Maildir outbox holds a Message-ID twice"
    assert set(written) == outbox_ids
    print(f"kills (what each interrupted, work units done in that life): {moments}")


@pytest.mark.slow
def test_imap_smtp_kill_9_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, imap_box: Dovecot, smtp_sink: tuple[Any, int]
) -> None:
    sink, port = smtp_sink
    rng = random.Random(SEED + 1)
    (tmp_path / "imap-password").write_text(imap_box.password + "\n")
    config = tmp_path / "caseloop.toml"
    config.write_text(
        'data_dir = "caseloop-data"\n'
        '[intake]\npoll_interval = "1s"\nbatch_size = 20\n[delivery]\ninterval = "1s"\n'
        "[[mailboxes]]\n"
        f'name = "imap"\ntype = "imap"\naddress = "{imap_box.user}"\n'
        f'host = "{imap_box.host}"\nport = {imap_box.port}\nsecurity = "none"\n'
        'password_file = "imap-password"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
    )
    raws = [complaint(i, rng) for i in range(N)]
    sent = {message_id(raw) for raw in raws}
    imap_box.append_many(raws)
    log = tmp_path / "daemon.log"

    moments = kill_at_random_moments(config, log, KILLS, rng)
    run_once(config, log)

    outbox_ids = check_database(tmp_path / "caseloop-data" / "caseloop.db", sent)
    assert imap_box.messages("INBOX") == [], moments
    processed = f"caseloop{imap_box.separator()}processed"
    moved = [message_id(raw) for raw in imap_box.messages(processed)]
    assert len(moved) == N and set(moved) == sent
    received = Counter(message_id(content) for _, _, content in sink.messages)
    assert set(received) == outbox_ids, "an ack never reached the sink, or one not in the outbox"
    resent = {mid: n for mid, n in received.items() if n > 1}
    # SMTP cannot be exactly-once: a resend is allowed, always with its outbox row's Message-ID.
    assert set(resent) <= outbox_ids
    print(f"kills (what each interrupted, work units done in that life): {moments}")
    print(f"acks resent over SMTP: {sum(resent.values()) - len(resent)}")
