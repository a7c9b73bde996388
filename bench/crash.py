"""Benchmark: exactly-once under kill -9. N complaints, K kills of `caseloop run` at random
moments with restarts, then `run --once` to the end; reports lost and duplicated tickets and
duplicate acks at the SMTP sink.

    .venv/bin/python bench/crash.py [-n 2000] [--kills 50] [--source imap|maildir] [--seed 1]

The mailbox is a Dovecot INBOX (or a Maildir), acks go to an aiosmtpd sink over SMTP. A kill
comes either at any instant from the start (a quarter of them: imports, migration, connecting)
or shortly after this life's first visible commit (intake or delivery). Lost and duplicated
tickets must be 0; SMTP may resend an ack after a kill between the server's 250 and our commit,
and every such resend must carry the Message-ID of its outbox row.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from ingest_maildir import make_message
from servers import (
    Sink,
    caseloop,
    db,
    fill_maildir,
    header_ids,
    multiappend,
    start_dovecot,
    write_config,
)


def work_done(path: Path) -> int:
    """Items taken in plus mails marked sent, as committed in the daemon's database."""
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            return int(
                conn.execute(
                    "select (select count(*) from source_items)"
                    " + (select count(*) from outbox where status = 'sent')"
                ).fetchone()[0]
            )
    except sqlite3.Error:
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--source", choices=["imap", "maildir"], default="imap")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--window", type=float, default=0.15, help="kill within this many seconds of progress"
    )
    parser.add_argument("--keep", help="work in this folder and keep it")
    args = parser.parse_args()
    n, rng = args.n, random.Random(args.seed)

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="caseloop-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    dovecot = start_dovecot() if args.source == "imap" else None
    sink = Sink().start()
    try:
        corpus = [make_message(i, random.Random(i)) for i in range(n)]
        sent = {header_ids(raw)[0] for raw in corpus}
        assert len(sent) == n
        if dovecot is not None:
            multiappend(dovecot, corpus)
        else:
            fill_maildir(root / "caseloop-data" / "inbox", corpus)
        config = write_config(root, imap=dovecot, smtp_port=sink.port, batch_size=args.batch_size)
        db_path = root / "caseloop-data" / "caseloop.db"
        log = root / "daemon.log"

        t0 = time.perf_counter()
        interrupted: Counter[str] = Counter()
        for _ in range(args.kills):
            before = work_done(db_path)
            with log.open("ab") as err:
                proc = subprocess.Popen(
                    caseloop(config, "run", log_level="INFO"),
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            if rng.random() < 0.25 or before >= 2 * n:
                time.sleep(rng.uniform(0.0, 2.0))
            else:
                deadline = time.monotonic() + 30
                while work_done(db_path) == before and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(rng.uniform(0.0, args.window))
            if proc.poll() is not None:
                raise SystemExit(f"the daemon exited {proc.returncode}; see {log}")
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            after = work_done(db_path)
            interrupted["while working" if after > before else "before any commit"] += 1
        killed_at = work_done(db_path)
        with log.open("ab") as err:
            subprocess.run(
                caseloop(config, "run", "--once"),
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=600,
            )
        elapsed = time.perf_counter() - t0

        with db(root) as conn:
            outcomes = Counter(
                dict(conn.execute("select outcome, count(*) from source_items group by 1"))
            )
            tickets = conn.execute("select count(*) from tickets").fetchone()[0]
            incoming = Counter(
                mid
                for (mid,) in conn.execute(
                    "select t.message_id from timeline_entries t"
                    " where t.kind = 'message_in' and t.direction = 'in'"
                )
            )
            first_in = Counter(
                mid
                for (mid,) in conn.execute(
                    "select t.message_id from tickets k join timeline_entries t"
                    " on t.id = (select min(id) from timeline_entries"
                    "            where ticket_id = k.id and kind = 'message_in')"
                )
            )
            many_acks = conn.execute(
                "select count(*) from (select ticket_id from outbox group by ticket_id"
                " having count(*) > 1)"
            ).fetchone()[0]
            outbox = dict(conn.execute("select message_id, status from outbox"))
            set_aside = conn.execute(
                "select outcome, reason, count(*) from source_items where outcome != 'ticket'"
                " group by 1, 2 order by 3 desc limit 5"
            ).fetchall()
        received = Counter(mid for _, mid, _ in sink.handler.arrivals)

        lost = sent - set(incoming)
        duplicated = sum(c - 1 for c in first_in.values() if c > 1) + max(
            0, tickets - len(first_in)
        )
        resent = {mid: c - 1 for mid, c in received.items() if c > 1}
        foreign = set(received) - set(outbox)
        missing = {mid for mid, status in outbox.items() if status == "sent"} - set(received)
        if dovecot is not None:
            left = len(dovecot.messages("INBOX"))
        else:
            left = len(list((root / "caseloop-data" / "inbox" / "new").iterdir()))
        print(
            f"{n} messages ({args.source} -> SMTP sink), {args.kills} kill -9 "
            f"({interrupted['while working']} after a commit of their life, "
            f"{interrupted['before any commit']} before any), {killed_at}/{2 * n} work units "
            f"done when the kills ended; total {elapsed:.0f} s"
        )
        print(f"source items by outcome: {dict(outcomes)}; left in the mailbox: {left}")
        for outcome, reason, count in set_aside:
            print(f"  {count} {outcome}: {reason}")
        print(f"tickets: {tickets}; lost: {len(lost)}; duplicated tickets: {duplicated}")
        print(
            f"outbox: {len(outbox)} rows, {dict(Counter(outbox.values()))}; "
            f"cases with more than one ack row: {many_acks}"
        )
        print(
            f"acks at the SMTP sink: {sum(received.values())} for {len(received)} Message-IDs; "
            f"resent: {sum(resent.values())} (all with their outbox row's Message-ID: "
            f"{'yes' if not foreign and set(resent) <= set(outbox) else 'NO'}); "
            f"sent but never received: {len(missing)}"
        )
        ok = (
            not lost
            and not duplicated
            and not many_acks
            and not foreign
            and not missing
            and tickets == n
            and left == 0
        )
        print("OK" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        sink.stop()
        if dovecot is not None:
            dovecot.remove()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
