"""Benchmark: GENERATED real-shaped complaints (bench/realmail.py) through a Maildir, against
mail-parser parsing the same mails, in one run.

    .venv/bin/python bench/realshape.py [-n 10000] [--rounds 3] [--seed 7] [--html 0.5]
        [--attachments 0.1] [--baseline CHECKOUT] [--profile FILE]

Each round, on the same mails: mail-parser alone (`mailparser.parse_from_bytes` of every mail,
in this process, the bytes already in memory), then `caseloop run --once` (a real subprocess,
the embedded SQLite, a Maildir inbox and the Maildir outbox: mail in to every ack written,
start-up included) in a fresh folder, and mail-parser again. It prints caseloop's rate and its
ratio to mail-parser's (the mean of the two around it) per round, then the median of the
rounds with the spread (lowest-highest), and checks that every mail became one case and one
ack. The CPU ratio puts the CPU seconds of each side (caseloop's processes, delivery's
included) in the place of wall time: what a busy machine changes least.

--baseline CHECKOUT times that checkout's caseloop too in each round, on the same mails
(`git archive COMMIT | tar -x -C DIR` makes one): before and after in one run.
--profile FILE runs one more `run --once` under cProfile and writes the stats there (read
them with `python -m pstats FILE`), not timed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mailparser
from realmail import corpus
from servers import TreeCPU, caseloop_argv, compiled, run_caseloop


def parse_only(mails: list[bytes]) -> tuple[float, float]:
    """mail-parser's rate over the mails: (msg/s of wall time, msg/s of CPU time)."""
    t0, c0 = time.perf_counter(), time.process_time()
    for raw in mails:
        mailparser.parse_from_bytes(raw)
    return len(mails) / (time.perf_counter() - t0), len(mails) / (time.process_time() - c0)


def fresh_maildir(root: Path, mails: list[bytes]) -> Path:
    """`caseloop init` in root, the mails in its inbox's new/; returns the config."""
    run_caseloop("init", str(root), timeout=None, stdout=subprocess.DEVNULL)
    inbox = root / "caseloop-data" / "inbox"
    for i, raw in enumerate(mails):
        name = f"{i:08d}.real"
        (inbox / "tmp" / name).write_bytes(raw)
        os.rename(inbox / "tmp" / name, inbox / "new" / name)
    return root / "caseloop.toml"


def older_config(text: str, code: Path) -> str:
    """The init template without the [sections] and keys an older checkout does not know."""
    known = (code / "daemon" / "config.py").read_text(encoding="utf-8")
    kept, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            name = line.strip("[] \n").split("]")[0].split(".")[0]
            skipping = f'"{name}"' not in known
        key = line.split("=")[0].strip() if "=" in line and not line.startswith("#") else ""
        if not skipping and (not key.isidentifier() or f'"{key}"' in known):
            kept.append(line)
    return "".join(kept)


def counts(root: Path) -> tuple[int, int, int]:
    """(cases, urgent group complaints, acks in the outbox)."""
    acks = len(os.listdir(root / "caseloop-data" / "outbox" / "new"))
    with sqlite3.connect(root / "caseloop-data" / "caseloop.db") as db:
        tickets = db.execute("select count(*) from tickets").fetchone()[0]
        group = db.execute(
            "select count(*) from tickets where json_extract(extra, '$.group.id') is not null"
        ).fetchone()[0]
    return tickets, group, acks


def caseloop_once(
    config: Path, profile: str | None = None, code: Path | None = None
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of it and every process it started) of `caseloop run
    --once` (of the checkout at `code`, if given)."""
    argv = caseloop_argv("run", "--once", config=config, log_level="WARNING")
    if profile:
        argv = [sys.executable, "-m", "cProfile", "-o", profile, *argv[1:]]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("CASELOOP_CONFIG", None)
    if code is not None:
        env["PYTHONPATH"] = str(code)  # its daemon/ and handlers/ before this checkout's
    t0 = time.perf_counter()
    # Run from the config's folder: `-m` puts the working folder first on the path.
    proc = subprocess.Popen(argv, env=env, cwd=config.parent, stdout=subprocess.DEVNULL)
    tree = TreeCPU([proc.pid])
    code = tree.wait(proc.pid)
    elapsed = time.perf_counter() - t0
    cpu = tree.stop()[proc.pid]
    if code != 0:
        raise SystemExit(f"caseloop run --once exited {code}")
    return elapsed, cpu


def spread(values: list[float], fmt: str) -> str:
    return (
        f"{format(statistics.median(values), fmt)} "
        f"({format(min(values), fmt)}-{format(max(values), fmt)})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--html", type=float, default=0.5, help="share of mails with an HTML alternative"
    )
    parser.add_argument(
        "--attachments", type=float, default=0.1, help="share of mails with an attachment"
    )
    parser.add_argument("--profile", help="also profile one run --once into this file")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also time the caseloop of this checkout (e.g. `git archive` of an older commit) "
        "on the same mails in each round: a before/after in one run",
    )
    parser.add_argument("--keep", help="work under this folder and keep it")
    args = parser.parse_args()

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="caseloop-real-"))
    base.mkdir(parents=True, exist_ok=True)
    mails = corpus(args.n, args.seed, html=args.html, attachments=args.attachments)
    size = sum(map(len, mails))
    print(
        f"{args.n} generated real-shaped complaints (seed {args.seed}; {args.html:.0%} with HTML, "
        f"{args.attachments:.0%} with an attachment), "
        f"{size / args.n / 1024:.1f} kB each on average ({os.cpu_count()} cores)"
    )
    ok = True
    runs: dict[str, list[float]] = {"mail-parser": [], "caseloop": [], "ratio": [], "CPU ratio": []}
    if args.baseline:
        compiled(args.baseline)  # as this checkout's: both run from bytecode
        runs |= {"baseline": [], "baseline ratio": [], "baseline CPU ratio": []}
    try:
        for k in range(args.rounds):
            mp = [parse_only(mails)]
            for name, code in (("caseloop", None), ("baseline", args.baseline)):
                if name == "baseline" and code is None:
                    continue
                root = base / f"round{k}-{name}"
                config = fresh_maildir(root, mails)
                if code is not None:  # an older checkout refuses sections it predates
                    config.write_text(older_config(config.read_text(), code), encoding="utf-8")
                seconds, cpu = caseloop_once(config, code=code)
                mp.append(parse_only(mails))  # mail-parser before and after each run, averaged
                tickets, group, acks = counts(root)
                rate, around = args.n / seconds, statistics.mean(w for w, _ in mp[-2:])
                cpu_ratio = args.n / cpu / statistics.mean(c for _, c in mp[-2:])
                prefix = "" if name == "caseloop" else "baseline "
                runs[name].append(rate)
                runs[prefix + "ratio"].append(rate / around)
                runs[prefix + "CPU ratio"].append(cpu_ratio)
                print(
                    f"round {k + 1} {name}: {rate:6.0f} msg/s ({seconds:.1f} s, CPU {cpu:.1f} s: "
                    f"{tickets} cases, {group} group complaints, {acks} acks); mail-parser "
                    f"around it {around:6.0f} msg/s; ratio {rate / around:.3f}, "
                    f"CPU ratio {cpu_ratio:.3f}",
                    flush=True,
                )
                ok = ok and tickets == args.n and acks == args.n
                if not args.keep:
                    shutil.rmtree(root)
            runs["mail-parser"].append(statistics.mean(w for w, _ in mp))
        print(f"median of {args.rounds} rounds (lowest-highest):")
        for name, values in runs.items():
            unit = "" if "ratio" in name else " msg/s"
            fmt = ".3f" if "ratio" in name else ".0f"
            print(f"  {name + ':':20s} {spread(values, fmt)}{unit}")
        if args.profile:
            config = fresh_maildir(base / "profile", mails)
            caseloop_once(config, args.profile)
            print(f"profile of one run --once: {args.profile}")
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
