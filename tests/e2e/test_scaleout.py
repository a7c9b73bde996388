"""Three `caseloop run` instances on one PostgreSQL, one Dovecot and one form folder, one of
them killed with -9 mid-batch: every message is one case or one entry, every intent one mail,
no row delivered twice but the ones the killed instance had claimed, every digest slot once,
and the survivors take the dead instance's mailboxes over."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from collections import Counter
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_caseloop, start_caseloop
from conftest import imap_mailbox_toml
from dovecot import Dovecot
from relay import message_id
from sqlalchemy import create_engine, text

PER_BOX = 100
ROWS = 60


def complaint(i: int, box: str, message_id: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"consumer{i}.{box}@example.net"
    msg["To"] = "support@example.com"
    msg["Subject"] = f"投诉：电水壶漏水 {box} {i}"
    msg["Message-ID"] = message_id or f"<scale-{box}-{i}@example.net>"
    msg.set_content(f"我买的电水壶漏水，订单号 2026{i:08d}，要求退货退款。")
    return msg.as_bytes()


@pytest.mark.slow
def test_three_instances_kill_9_one_and_nothing_is_lost_doubled_or_sent_twice(
    tmp_path: Path, pg_schema_url: str, imap_box: Dovecot, smtp_sink: tuple[Any, int]
) -> None:
    sink, port = smtp_sink
    forms = tmp_path / "forms"
    forms.mkdir()
    mailboxes = imap_mailbox_toml(imap_box, tmp_path, "support") + imap_mailbox_toml(
        imap_box, tmp_path, "sales"
    ).replace('name = "sales"\n', 'name = "sales"\nfolder = "sales"\n')
    body = (
        f'data_dir = "caseloop-data"\n[database]\nurl = "{pg_schema_url}"\nlease = "3s"\n'
        '[intake]\npoll_interval = "1s"\nbatch_size = 10\n[delivery]\ninterval = "1s"\n'
        "[tickets]\nmail_essentials = []\n"
        '[escalation]\nsupervisors = ["boss@example.com"]\ndigest_cron = "* * * * *"\n'
        'digest_when_empty = true\nsweep_interval = "1s"\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        f"{mailboxes}"
        f'[[forms]]\nname = "web"\npath = "{forms}"\nid_column = "id"\n'
        '[forms.columns]\nemail = "email"\nname = "name"\ndescription = "text"\n'
    )
    configs = []
    for name in ("a", "b", "c"):  # three machines: each its own folder, one database
        root = tmp_path / name
        root.mkdir()
        (root / "imap-password").write_text(imap_box.password)
        (root / "caseloop.toml").write_text(body, encoding="utf-8")
        configs.append(root / "caseloop.toml")
    run_caseloop("migrate", config=configs[0])

    sent = set()
    for box, folder in (("support", "INBOX"), ("sales", "sales")):
        raws = [complaint(i, box) for i in range(PER_BOX)]
        raws.append(complaint(0, "both", "<cc-to-both@example.net>"))  # to both addresses
        imap_box.append_many(raws, folder)
        sent |= {message_id(raw) for raw in raws}
    with (forms / "export.csv").open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "name", "email", "text"])
        for i in range(ROWS):
            writer.writerow(
                [f"w{i}", f"用户{i}", f"web{i}@example.net", "网购的鞋子开胶，要求退货。"]
            )

    engine = create_engine(pg_schema_url)

    def scalar(sql: str, **params: object) -> Any:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    logs = [tmp_path / f"{name}.log" for name in ("a", "b", "c")]
    procs: list[subprocess.Popen[str]] = []
    try:
        for config, log in zip(configs, logs, strict=True):
            with log.open("w") as err:
                procs.append(start_caseloop("run", config=config, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=err))  # fmt: skip
        total = 2 * (PER_BOX + 1) + ROWS
        deadline = time.monotonic() + 60
        while (scalar("select count(*) from source_items") or 0) < total // 4:
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            time.sleep(0.02)
        # Kill -9 an instance that holds a mailbox, mid-batch.
        with engine.connect() as conn:
            held = conn.execute(
                text(
                    "select i.pid, i.id from leases l join instances i on i.id = l.holder "
                    "where l.name like 'source:%' order by l.name"
                )  # fmt: skip
            ).first()
        assert held is not None
        victim = next(p for p in procs if p.pid == held[0])  # one of ours, by its PID
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.monotonic()
        with engine.connect() as conn:
            claimed = {
                mid
                for (mid,) in conn.execute(
                    text("select message_id from outbox where claimed_by = :id"), {"id": held[1]}
                )
            }
        # The survivors take its mailboxes over, then drain everything.
        while scalar(
            "select count(*) from leases where holder = :id and name like 'source:%'", id=held[1]
        ):
            assert time.monotonic() - killed_at < 60, "the dead instance's mailboxes stay held"
            time.sleep(0.1)
        takeover = time.monotonic() - killed_at
        deadline = time.monotonic() + 90
        while (
            scalar("select count(*) from source_items") < total
            or scalar("select count(*) from outbox where status = 'queued'")
            or scalar("select count(*) from digest_runs") < 1
        ):
            assert time.monotonic() < deadline, [log.read_text()[-2000:] for log in logs]
            time.sleep(0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
    survivors = [p for p in procs if p is not victim]
    assert all(p.returncode == 0 for p in survivors)

    with engine.connect() as conn:
        outcomes = dict(
            conn.execute(text("select outcome, count(*) from source_items group by 1")).all()
        )
        assert outcomes == {"ticket": 2 * PER_BOX + 1 + ROWS, "duplicate": 1}
        assert scalar("select count(*) from tickets") == 2 * PER_BOX + 1 + ROWS
        incoming = Counter(
            mid
            for (mid,) in conn.execute(
                text("select message_id from timeline_entries where kind = 'message_in'")
            )
        )
        forms = incoming.pop(None)  # a form row has no Message-ID: its key is its row id
        assert set(incoming) == sent and max(incoming.values()) == 1 and forms == ROWS
        acks = dict(conn.execute(text("select ticket_id, count(*) from outbox where kind = 'ack' "
                                      "group by 1")).all())  # fmt: skip
        assert len(acks) == 2 * PER_BOX + 1 + ROWS and set(acks.values()) == {1}
        rows = dict(conn.execute(text("select message_id, status from outbox")).all())
        slots = conn.execute(text("select count(*), count(distinct slot) from digest_runs")).one()
        digests = scalar("select count(*) from outbox where kind = 'digest'")
        assert digests == scalar("select sum(sent) from digest_runs")  # one per slot taken
    engine.dispose()
    assert set(rows.values()) == {"sent"}
    assert slots[0] == slots[1] >= 1

    received = Counter(message_id(content) for _, _, content in sink.messages)
    assert set(received) == set(rows), "a row not delivered, or a delivery of no row"
    twice = {mid for mid, n in received.items() if n > 1}
    assert twice <= claimed, f"delivered twice though the killed instance never held them: {twice}"
    assert not (imap_box.messages("INBOX") or imap_box.messages("sales"))
    for log in [logs[procs.index(p)] for p in survivors]:
        text_ = log.read_text()
        assert "source.error" not in text_ and "UniqueViolation" not in text_, text_[-3000:]
    print(f"takeover after kill -9: {takeover:.1f} s; resent after the kill: {len(twice)}; "
          f"pid {os.getpid()}")  # fmt: skip
