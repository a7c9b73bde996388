"""Benchmark: RSS of `caseloop run --once` across N messages (Maildir in, Maildir outbox).

    .venv/bin/python bench/memory.py [-n 50000] [--interval 1]

Samples VmRSS of the process from /proc every --interval seconds and prints start (the first
sample after its first commit), peak (VmHWM, the kernel's high-water mark, as last seen), end
(the last sample) and a sparse series, so growth with the number of messages shows.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from ingest_maildir import make_message
from servers import caseloop, fill_maildir, vm_kb, write_config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=50_000)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--keep", help="work in this folder and keep it")
    args = parser.parse_args()

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="caseloop-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        rng = random.Random(5)
        t0 = time.perf_counter()
        inbox = root / "caseloop-data" / "inbox"
        fill_maildir(inbox, (make_message(i, rng) for i in range(args.n)))
        print(f"generated {args.n} messages in {time.perf_counter() - t0:.1f} s")
        config = write_config(root)
        db_path = root / "caseloop-data" / "caseloop.db"

        t0 = time.perf_counter()
        proc = subprocess.Popen(caseloop(config, "run", "--once"), stdout=subprocess.DEVNULL)
        samples: list[tuple[float, int, int]] = []  # (seconds, RSS kB, items taken in)
        peak = 0
        while proc.poll() is None:
            rss = vm_kb(proc.pid)
            peak = max(peak, vm_kb(proc.pid, "VmHWM") or 0)
            done = 0
            if db_path.exists():
                try:
                    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
                        done = db.execute("select count(*) from source_items").fetchone()[0]
                except sqlite3.Error:
                    pass
            if rss is not None:
                samples.append((time.perf_counter() - t0, rss, done))
            time.sleep(args.interval)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"run --once exited {proc.returncode}")
            return 1
        with sqlite3.connect(db_path) as db:
            tickets = db.execute("select count(*) from tickets").fetchone()[0]
        acks = len(os.listdir(root / "caseloop-data" / "outbox" / "new"))

        print(
            f"run --once: {args.n} messages -> {tickets} tickets, {acks} acks in {elapsed:.0f} s "
            f"= {args.n / elapsed:.0f} msg/s; {len(samples)} RSS samples"
        )
        step = max(1, len(samples) // 10)
        for seconds, rss, done in samples[::step] + samples[-1:]:
            print(f"  t={seconds:6.1f} s  items={done:6d}  RSS {rss / 1024:6.1f} MB")
        last = samples[-1][1]
        busy = [rss for _, rss, done in samples if done > 0] or [last]
        print(
            f"RSS start {busy[0] / 1024:.1f} MB (first sample after the first commit), "
            f"peak {peak / 1024:.1f} MB (VmHWM), end {last / 1024:.1f} MB (last sample)"
        )
        return 0 if tickets == args.n == acks else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
