"""Benchmark: deliver N queued acks from the outbox to a loopback aiosmtpd sink.

    .venv/bin/python bench/smtp_delivery.py [-n 5000]

N synthetic complaints are taken in from a Maildir by the App (intake only, so N acks wait in
the outbox), then `App.send_outbox()` is timed until the outbox is empty. The sink is aiosmtpd
in its own process and only counts.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from ingest_maildir import make_message
from servers import SinkProcess, fill_maildir, write_config

from daemon import config as configmod
from daemon.app import App


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=5000)
    parser.add_argument("--keep", help="work in this folder and keep it")
    args = parser.parse_args()

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="caseloop-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    sink = SinkProcess()
    try:
        rng = random.Random(3)
        inbox = root / "caseloop-data" / "inbox"
        fill_maildir(inbox, (make_message(i, rng) for i in range(args.n)))
        config = configmod.load(write_config(root, smtp_port=sink.port))
        app = App(config)
        t0 = time.perf_counter()
        while sum(app.poll_all().outcomes.values()):
            pass
        took = time.perf_counter() - t0
        print(f"intake only: {args.n} complaints -> acks queued in {took:.1f} s")
        with sqlite3.connect(root / "caseloop-data" / "caseloop.db") as db:
            queued = db.execute("select count(*) from outbox where status='queued'").fetchone()[0]

        t0 = time.perf_counter()
        sent = not_sent = 0
        while True:
            summary = app.send_outbox()
            sent, not_sent = sent + summary.sent, not_sent + summary.not_sent
            if not summary.sent and not summary.not_sent:
                break
        elapsed = time.perf_counter() - t0
        app.close()
        at_sink = sink.count()
        print(
            f"send_outbox: {queued} queued -> {sent} sent, {not_sent} not sent, {at_sink} at the "
            f"sink in {elapsed:.2f} s = {sent / elapsed:.0f} msg/s ({os.cpu_count()} cores)"
        )
        return 0 if sent == queued == at_sink == args.n else 1
    finally:
        sink.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
