"""Benchmark: N synthetic complaints in a Maildir -> `caseloop run --once` -> tickets + acks.

    .venv/bin/python bench/ingest_maildir.py [-n 10000] [--db URL] [--keep DIR]

Prints the wall time of `run --once` (a real subprocess, embedded SQLite by default) and the
rate in messages per second, then checks that every message became one ticket and one ack.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from email.header import Header
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from servers import run_caseloop  # bench/servers.py: tests/cli_run.py's helper

ZH = [
    "我在贵店购买的电饭煲使用三天后无法加热，要求退货退款。订单号{order}，金额{amount}元。",
    "快递延误十天仍未送达，客服态度恶劣，请尽快处理。订单号{order}。",
    "收到的商品与描述不符，存在虚假宣传，要求赔偿。金额{amount}元，订单号{order}。",
]
EN = [
    "The blender I bought (order {order}, {amount} USD) stopped working after a week. "
    "I want a refund.",
    "My parcel for order {order} is two weeks late and nobody answers my calls.",
]


def make_message(i: int, rng: random.Random) -> bytes:
    msg = EmailMessage()
    zh = rng.random() < 0.7
    order, amount = f"2026{rng.randrange(10**8):08d}", rng.randrange(20, 5000)
    body = (rng.choice(ZH) if zh else rng.choice(EN)).format(order=order, amount=amount)
    msg["From"] = f"consumer{i}@example.net"
    msg["To"] = "support@example.com"
    msg["Subject"] = Header(
        "投诉：商品问题" if zh else "Complaint about my order", "utf-8"
    ).encode()
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = make_msgid(idstring=str(i), domain="example.net")
    if zh and i % 5 == 0:
        msg.set_content(body, charset="gb18030")
    else:
        msg.set_content(body)
    return msg.as_bytes()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--db", help="database URL (default: the embedded SQLite)")
    parser.add_argument("--keep", help="work in this folder and keep it")
    args = parser.parse_args()

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="caseloop-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    run_caseloop("init", str(root), timeout=None, stdout=subprocess.DEVNULL)
    config = root / "caseloop.toml"
    if args.db:
        text = config.read_text().replace(
            'url = "sqlite:///caseloop-data/caseloop.db"', f'url = "{args.db}"'
        )
        config.write_text(text)
        run_caseloop("migrate", config=config, timeout=None)
    inbox = root / "caseloop-data" / "inbox"
    rng = random.Random(7)
    t0 = time.perf_counter()
    for i in range(args.n):
        name = f"{i:08d}.bench"
        (inbox / "tmp" / name).write_bytes(make_message(i, rng))
        os.rename(inbox / "tmp" / name, inbox / "new" / name)
    print(f"generated {args.n} messages in {time.perf_counter() - t0:.1f} s")

    t0 = time.perf_counter()
    run_caseloop(
        "run", "--once", config=config, log_level="WARNING", timeout=None, stdout=subprocess.DEVNULL
    )
    elapsed = time.perf_counter() - t0

    acks = len(os.listdir(root / "caseloop-data" / "outbox" / "new"))
    if args.db:
        listing = run_caseloop(
            "tickets", "list", "--json", "--limit", str(args.n + 10), config=config, timeout=None
        ).stdout
        tickets = len(json.loads(listing))
    else:
        with sqlite3.connect(root / "caseloop-data" / "caseloop.db") as db:
            tickets = db.execute("select count(*) from tickets").fetchone()[0]
    print(
        f"run --once: {args.n} messages -> {tickets} tickets, {acks} acks in {elapsed:.1f} s"
        f" = {args.n / elapsed:.0f} msg/s ({os.cpu_count()} cores)"
    )
    ok = tickets == args.n and acks == args.n
    if not args.keep:
        shutil.rmtree(root)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
