"""A frozen IMAP server (SIGSTOP: connections accepted, nothing answered) stalls only its own
source: the daemon's other sources and the outbox go on, and `caseloop status` answers at once
from the database and names the stalled source."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_caseloop, start_caseloop
from conftest import imap_mailbox_toml
from dovecot import Dovecot

from daemon.maildirs import deliver_to_maildir


def complaint(sender: str, subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "support@example.com", subject
    msg["Message-ID"] = f"<{subject.replace(' ', '-')}@example.net>"
    msg.set_content("我买的电水壶漏水，订单号 2026000001，要求退货退款。")
    return msg.as_bytes()


def acks_to(sink: Any, address: str) -> int:
    return sum(1 for _, rcpts, _ in sink.messages if address in rcpts)


def wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


@pytest.mark.slow
def test_a_frozen_imap_server_stalls_only_its_source_and_status_names_it(
    tmp_path: Path, imap_box: Dovecot, smtp_sink: tuple[Any, int]
) -> None:
    sink, port = smtp_sink
    config = tmp_path / "caseloop.toml"
    config.write_text(
        'data_dir = "caseloop-data"\n[intake]\npoll_interval = "2s"\n[delivery]\ninterval = "1s"\n'
        "[tickets]\nmail_essentials = []\n"
        '[[mailboxes]]\nname = "local"\ntype = "maildir"\naddress = "support@example.com"\n'
        + imap_mailbox_toml(imap_box, tmp_path, "imap")
        + f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
    )
    inbox = tmp_path / "caseloop-data" / "inbox"
    log = tmp_path / "daemon.log"
    with log.open("w") as err:
        daemon = start_caseloop("run", config=config, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    assert imap_box.process is not None
    group = imap_box.process.pid  # the test's own Dovecot: its process group, by PID
    frozen = False
    try:
        imap_box.append(complaint("imap.user@example.net", "before the freeze"))
        wait(lambda: acks_to(sink, "imap.user@example.net") == 1, 30, log.read_text())

        os.killpg(group, signal.SIGSTOP)
        frozen = True
        deliver_to_maildir(inbox, complaint("local.user@example.net", "during the freeze"))
        drained = "the outbox did not drain while IMAP was frozen"
        wait(lambda: acks_to(sink, "local.user@example.net") == 1, 20, drained)

        def stalled() -> bool:
            started = time.monotonic()
            done = run_caseloop("status", "--json", config=config, timeout=15)
            assert time.monotonic() - started < 15
            sources = {s["name"]: s for s in json.loads(done.stdout)["sources"]}
            assert not sources["local"]["stalled"]
            return bool(sources["imap"]["stalled"])

        wait(stalled, 40, "status never named the frozen IMAP source stalled")
        text = run_caseloop("status", config=config, timeout=15).stdout
        assert "source imap: STALLED" in text and "source local: ok" in text
    finally:
        if frozen:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGCONT)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=90)
