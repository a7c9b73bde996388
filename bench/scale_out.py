"""Benchmark: the same N generated complaints over IMAP, mail in to every ack at an SMTP sink, on
SQLite with one instance and on PostgreSQL with 1, 2, 3 instances, in one run; as ratios.

    .venv/bin/python bench/scale_out.py [-n 6000] [--instances 1,2,3] [--mailboxes 4]
                                        [--repeat 3] [--py-spy BIN --profile DIR]

Each trial starts a fresh Dovecot and APPENDs the same generated mails (bench/ingest_maildir's
make_message, seed 7), spread round-robin over --mailboxes folders that the config names as as
many IMAP mailboxes, so several instances have separate mailboxes to work. PostgreSQL trials get
a fresh database (CREATE DATABASE on 127.0.0.1:5432, dropped after); every trial's schema is
made with `caseloop migrate` before the clock starts. The clock runs from starting K `caseloop
run --once` processes (the same config) until the last has exited and every ack it queued is
at the sink (an aiosmtpd in this process that notes each mail's Message-ID, so a mail
delivered twice shows). Trials are interleaved (SQLite, PG x1, PG x2, ... then again) and each
figure is the median of --repeat, with the spread.

Beside the wall time: the CPU the caseloop processes used (each instance with every process it
started: its fork server, worker and delivery process; servers.TreeCPU) and the machine's busy CPU
over the trial (/proc/stat; 2 cores = 200%), so one sees whether a trial waited or computed.

--profile DIR with --py-spy BIN instead runs one SQLite and one trial of each PostgreSQL
instance count under `py-spy record --subprocesses --format raw` and writes DIR/sqlite.txt,
DIR/pg1.txt, DIR/pg2-0.txt, DIR/pg2-1.txt..., the collapsed stacks (speedscope, flamegraph.pl).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ingest_maildir import make_message
from servers import (
    Dovecot,
    Sink,
    TreeCPU,
    caseloop,
    database_url,
    drop_database,
    fresh_database,
    multiappend,
    proc_stat,
    proc_stats,
    run_caseloop,
    start_dovecot,
)
from sqlalchemy import create_engine, text


@dataclass
class Trial:
    label: str
    seconds: float
    n: int
    ends: list[tuple[float, float]]  # each instance: seconds until it exited, its CPU seconds
    busy: float  # the machine's busy CPU over the trial, in cores
    checks: dict[str, int] = field(default_factory=dict)
    # CPU seconds of the others over the trial: PostgreSQL (all its processes), this trial's
    # Dovecot, and this process (the SMTP sink)
    others: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_caseloop(self) -> float:
        """CPU seconds of all instances and every process they started."""
        return sum(cpu for _, cpu in self.ends)

    @property
    def rate(self) -> float:
        return self.n / self.seconds


def write_config(
    root: Path, dovecot: Dovecot, boxes: int, smtp_port: int, url: str, intake: list[str]
) -> Path:
    """One caseloop.toml for every instance: `boxes` IMAP mailboxes (folders box0...) on the
    one Dovecot account, acks to the sink."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "imap-password").write_text(dovecot.password + "\n")
    lines = [
        'data_dir = "caseloop-data"',
        "[database]",
        f'url = "{url}"',
        "[intake]",
        'poll_interval = "1s"',
        *intake,
        "[delivery]",
        'interval = "1s"',
        "[smtp]",
        'host = "127.0.0.1"',
        f"port = {smtp_port}",
        'security = "none"',
    ]
    for box in range(boxes):
        lines += [
            "[[mailboxes]]",
            f'name = "box{box}"',
            'type = "imap"',
            f'address = "{dovecot.user}"',
            f'host = "{dovecot.host}"',
            f"port = {dovecot.port}",
            'security = "none"',
            f'username = "{dovecot.user}"',
            'password_file = "imap-password"',
            f'folder = "box{box}"',
            f'processed_folder = "done{box}"',
            f'quarantine_folder = "quarantine{box}"',
            "idle = false",
        ]
    path = root / "caseloop.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the machine so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its reaped children (/proc/PID/stat utime..cstime)."""
    found = proc_stat(pid)
    if found is None:
        return 0.0
    return sum(int(v) for v in found[1][11:15]) / os.sysconf("SC_CLK_TCK")


def postmaster() -> int | None:
    """The PID of PostgreSQL's postmaster (a `postgres` process whose parent is not one)."""
    comms = {pid: (comm, int(fields[1])) for pid, comm, fields in proc_stats()}
    for pid, (comm, ppid) in comms.items():
        if comm == "postgres" and comms.get(ppid, ("", 0))[0] != "postgres":
            return pid
    return None


def others_cpu(dovecot: Dovecot) -> dict[str, float]:
    """CPU seconds so far of PostgreSQL, the trial's Dovecot, and this process (the sink)."""
    usage = os.times()
    pg = postmaster()
    master = dovecot.process.pid if dovecot.process is not None else 0
    return {
        "postgres": tree_cpu(pg) + sum(tree_cpu(c) for c in children(pg)) if pg else 0.0,
        "dovecot": tree_cpu(master) + sum(tree_cpu(c) for c in children(master)),
        "sink": usage.user + usage.system,
    }


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (their CPU is not in its cutime until reaped)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as kids:
            return [int(c) for c in kids.read().split()]
    except OSError:
        return []


def run_instances(argvs: list[list[str]], logs: Path) -> list[tuple[float, float]]:
    """Start the processes together and wait for all: each one's (seconds until it exited,
    CPU seconds), the processes it started included."""
    t0 = time.perf_counter()
    procs = []
    for i, argv in enumerate(argvs):
        with (logs / f"instance{i}.log").open("wb") as log:
            procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log))
    tree = TreeCPU([p.pid for p in procs])
    exits: dict[int, float] = {}  # pid: seconds until it exited
    codes = []
    while len(exits) < len(procs):
        waited = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)
        pid = waited.si_pid if waited is not None else 0
        proc = next((p for p in procs if p.pid == pid), None)
        if proc is None:  # not an instance (none other is this process's child): reap it
            os.waitpid(pid, 0)
            continue
        exits[pid] = time.perf_counter() - t0
        proc.returncode = tree.wait(pid)
        codes.append(proc.returncode)
    cpu = tree.stop()
    if any(codes):
        tails = [(logs / f"instance{i}.log").read_text()[-2000:] for i in range(len(procs))]
        raise SystemExit(f"instances exited {codes}:\n" + "\n---\n".join(tails))
    return [(exits[p.pid], cpu[p.pid]) for p in procs]


def trial(
    label: str,
    instances: int,
    corpus: list[bytes],
    args: argparse.Namespace,
    work: Path,
    spy: Path | None = None,
) -> Trial:
    dovecot = start_dovecot()
    sink = Sink(keep=True).start()
    database = fresh_database("caseloop_bench") if label != "sqlite" else None
    root = work / f"{label}-{uuid.uuid4().hex[:6]}"
    try:
        for box in range(args.mailboxes):
            multiappend(dovecot, corpus[box :: args.mailboxes], f"box{box}")
        url = "sqlite:///caseloop-data/caseloop.db" if database is None else database_url(database)
        config = write_config(root, dovecot, args.mailboxes, sink.port, url, args.intake)
        run_caseloop("migrate", config=config, timeout=None)
        argv = caseloop(config, "run", "--once")
        argvs = [[*py_spy(args, spy, i, instances), *argv] for i in range(instances)]
        busy0, total0 = busy_jiffies()
        others0 = others_cpu(dovecot)
        t0 = time.perf_counter()
        ends = run_instances(argvs, root)
        engine = create_engine(
            f"sqlite:///{root / 'caseloop-data' / 'caseloop.db'}" if database is None else url
        )
        with engine.connect() as conn:

            def count(sql: str) -> int:
                return int(conn.execute(text(sql)).scalar() or 0)

            queued = count("select count(*) from outbox")
            # run --once delivers before it exits; a short grace for the sink's last DATA
            sink.handler.wait(lambda: sink.handler.count >= queued, 30)
            elapsed = time.perf_counter() - t0
            busy1, total1 = busy_jiffies()
            others = {k: v - others0[k] for k, v in others_cpu(dovecot).items()}
            per_id = Counter(mid for _, mid, _ in sink.handler.arrivals)
            entries = Counter(
                m
                for (m,) in conn.execute(
                    text("select message_id from timeline_entries where kind = 'message_in'")
                )
            )
            checks = {
                "cases": count("select count(*) from tickets"),
                "items": count("select count(*) from source_items"),
                "outbox": queued,
                "sent": count("select count(*) from outbox where status = 'sent'"),
                "delivered": sink.handler.count,
                "delivered_twice": sum(1 for c in per_id.values() if c > 1),
                "entries_twice": sum(1 for c in entries.values() if c > 1),
            }
        engine.dispose()
        cores = os.cpu_count() or 1
        busy = (busy1 - busy0) / max(1, total1 - total0) * cores
        return Trial(label, elapsed, len(corpus), ends, busy, checks, others)
    finally:
        sink.stop()
        dovecot.remove()
        if database is not None:
            drop_database(database)


def py_spy(args: argparse.Namespace, out: Path | None, i: int, instances: int) -> list[str]:
    """The py-spy command line that records instance i into out (none without --profile)."""
    if out is None:
        return []
    name = out.with_name(f"{out.name}-{i}.txt" if instances > 1 else f"{out.name}.txt")
    spy = [args.py_spy or "py-spy", "record", "--subprocesses", "--format", "raw"]
    return [*spy, "--rate", "200", "-o", str(name), "--"]


def summary(trials: list[Trial]) -> tuple[float, str]:
    rates = [t.rate for t in trials]
    med = statistics.median(rates)
    spread = f"{min(rates):.0f}-{max(rates):.0f}" if len(rates) > 1 else "-"
    return med, spread


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=6000)
    parser.add_argument("--instances", default="1,2,3", help="PostgreSQL instance counts")
    parser.add_argument("--mailboxes", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument(
        "--intake",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a line for every trial's [intake] section, e.g. prepare_aside=false",
    )
    parser.add_argument("--py-spy", help="the py-spy binary, for --profile")
    parser.add_argument("--profile", help="profile SQLite and each PostgreSQL count into DIR")
    args = parser.parse_args()
    counts = [int(k) for k in args.instances.split(",") if k]
    rng = random.Random(7)
    corpus = [make_message(i, rng) for i in range(args.n)]
    print(f"{args.n} generated mails over {args.mailboxes} IMAP folders, {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory(prefix="caseloop-scale-") as tmp:
        work = Path(tmp)
        if args.profile:  # SQLite x1 and each PostgreSQL count, once each under py-spy
            out = Path(args.profile).resolve()
            out.mkdir(parents=True, exist_ok=True)
            runs = ([] if args.no_sqlite else [("sqlite", 1)]) + [(f"pg{k}", k) for k in counts]
            for label, k in runs:
                t = trial(label, k, corpus, args, work, spy=out / label)
                print(f"profiled {label}: {t.rate:.0f} msg/s under py-spy -> {out}/{label}*.txt")
            return 0
        plan = ([] if args.no_sqlite else [("sqlite", 1)]) + [(f"pg{k}", k) for k in counts]
        results: dict[str, list[Trial]] = {label: [] for label, _ in plan}
        for rep in range(args.repeat):
            for label, k in plan:
                t = trial(label, k, corpus, args, work)
                results[label].append(t)
                print(
                    f"  [{rep + 1}/{args.repeat}] {label:6s} {t.rate:6.0f} msg/s "
                    f"({t.seconds:.1f} s, caseloop CPU {t.cpu_caseloop:.1f} s, machine busy "
                    f"{t.busy * 100:.0f}%; CPU s of "
                    + ", ".join(f"{k} {v:.1f}" for k, v in t.others.items())
                    + "; instances exited at "
                    + ", ".join(f"{s:.1f} s ({c:.1f} s CPU)" for s, c in t.ends)
                    + f") {t.checks}",
                    flush=True,
                )
    print("median msg/s (min-max) over", args.repeat, "trials, mail in to every ack at the sink:")
    medians = {}
    for label, trials in results.items():
        medians[label], spread = summary(trials)
        print(f"  {label:6s} {medians[label]:6.0f}  ({spread})")
    if "sqlite" in medians and "pg1" in medians:
        print(f"  PG1/SQLite1 = {medians['pg1'] / medians['sqlite']:.2f}")
    for k in counts:
        if k > 1 and "pg1" in medians:
            print(f"  PG{k}/PG1 = {medians[f'pg{k}'] / medians['pg1']:.2f}")
    bad = [
        (t.label, t.checks)
        for trials in results.values()
        for t in trials
        if t.checks["cases"] != args.n
        or t.checks["delivered"] != t.checks["outbox"]
        or t.checks["delivered_twice"]
        or t.checks["entries_twice"]
    ]
    for label, checks in bad:
        print(f"  CHECK FAILED {label}: {checks}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
