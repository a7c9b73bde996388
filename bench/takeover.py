"""Benchmark: two `caseloop run` daemons, default settings ([database] lease = "20s",
IMAP IDLE), one PostgreSQL database and ONE big IMAP mailbox.

    .venv/bin/python bench/takeover.py [-n 3000]

Phase 1, nothing crashes: both daemons run until the mailbox is drained and every ack is at the
SMTP sink; counts cases per Message-ID and deliveries per outbox row (both must be exactly 1).
Phase 2, the same with a fresh database and mailbox, but the daemon holding the mailbox is
killed with -9 when a third of the mail is in: how long until the survivor holds the mailbox,
how long until everything is in and out, and which rows (if any) reached the sink twice (only
rows the killed daemon had claimed may).
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from ingest_maildir import make_message
from servers import (
    Sink,
    database_url,
    drop_database,
    fresh_database,
    multiappend,
    start_caseloop,
    start_dovecot,
    write_config,
)
from sqlalchemy import create_engine, text


def phase(n: int, work: Path, kill: bool, seed: int) -> dict[str, object]:
    dovecot = start_dovecot()
    sink = Sink(keep=True).start()
    name = fresh_database("caseloop_takeover")
    url = database_url(name)
    engine = create_engine(url)
    procs: list[subprocess.Popen[str]] = []
    try:
        rng = random.Random(seed)
        multiappend(dovecot, (make_message(i, rng) for i in range(n)))
        configs = []
        for machine in ("a", "b"):
            config = write_config(work / machine, imap=dovecot, smtp_port=sink.port,
                                  poll_interval="30s", delivery_interval="10s")  # fmt: skip
            database = f'[database]\nurl = "{url}"\n'
            text_ = config.read_text().replace("[intake]\n", database + "[intake]\n", 1)
            config.write_text(text_)
            configs.append(config)
        subprocess.run([sys.executable, "-m", "daemon", "--config", str(configs[0]), "migrate"],
                       check=True, capture_output=True)  # fmt: skip

        def scalar(sql: str, **params: object) -> int:
            with engine.connect() as conn:
                return int(conn.execute(text(sql), params).scalar() or 0)

        t0 = time.monotonic()
        for config in configs:
            with (config.parent / "daemon.log").open("w") as log:
                procs.append(start_caseloop("run", config=config, log_level="WARNING",
                                            stdout=subprocess.DEVNULL, stderr=log))  # fmt: skip
        result: dict[str, object] = {"kill": kill}
        claimed: set[str] = set()
        if kill:
            while scalar("select count(*) from source_items") < n // 3:
                time.sleep(0.02)
            with engine.connect() as conn:
                pid, holder = conn.execute(
                    text(
                        "select i.pid, i.id from leases l join instances i on i.id = l.holder "
                        "where l.name like 'source:%'"
                    )  # fmt: skip
                ).one()
            victim = next(p for p in procs if p.pid == pid)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            killed = time.monotonic()
            with engine.connect() as conn:
                claimed = {
                    m
                    for (m,) in conn.execute(
                        text("select message_id from outbox where claimed_by = :h"), {"h": holder}
                    )
                }
            while scalar("select count(*) from leases where name like 'source:%' and holder is not "
                         "null and holder != :h", h=holder) == 0:  # fmt: skip
                time.sleep(0.05)
            result["takeover_s"] = round(time.monotonic() - killed, 1)
            result["in_at_kill"] = n // 3
        while (
            scalar("select count(*) from source_items") < n
            or scalar("select count(*) from outbox where status = 'queued'")
            or sink.handler.count < scalar("select count(*) from outbox")
        ):
            if time.monotonic() - t0 > 600:
                raise SystemExit("not drained in 10 minutes")
            time.sleep(0.1)
        result["drained_s"] = round(time.monotonic() - t0, 1)
        with engine.connect() as conn:
            outcomes = dict(
                conn.execute(text("select outcome, count(*) from source_items group by 1")).all()
            )
            per_id = Counter(
                m
                for (m,) in conn.execute(
                    text("select message_id from timeline_entries where kind = 'message_in'")
                )
            )
            rows = {m for (m,) in conn.execute(text("select message_id from outbox"))}
        delivered = Counter(mid for _, mid, _ in sink.handler.arrivals)
        twice = {m for m, c in delivered.items() if c > 1}
        result.update(
            outcomes=outcomes,
            cases_per_message_max=max(per_id.values()),
            rows=len(rows),
            delivered=sum(delivered.values()),
            rows_not_delivered=len(rows - set(delivered)),
            delivered_twice=len(twice),
            delivered_twice_not_claimed_by_the_killed=len(twice - claimed),
        )
        return result
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
        engine.dispose()
        drop_database(name)
        sink.stop()
        dovecot.remove()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kill in (False, True):
            print(phase(args.n, Path(tmp) / ("kill" if kill else "calm"), kill, 7), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
