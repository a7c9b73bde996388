"""Benchmark: N complaints APPENDed to Dovecot -> `caseloop run --once` -> tickets + acks at an
SMTP sink, beside the bare rate of each stage measured in the same run.

    .venv/bin/python bench/imap_ingest.py [-n 10000] [--peer] [--peer-n 1000] [--corpus real]

Stages, each alone: Dovecot batch FETCH (imapclient, BODY.PEEK[] in chunks of 100), parsing
(handlers.parse.parse_message), the SMTP sink fed by a bare smtplib client over one connection
(with the very acks caseloop queued). The sink is aiosmtpd in its own process and only counts.
Then `run --once` (a real subprocess, embedded SQLite, IMAP mailbox + [smtp]) to tickets plus
acks delivered, start-up included (the schema made before, by `caseloop migrate`, as the peer's
by its `migrate`); it prints msg/s for each and the ratio run / slowest stage.

--peer also times django-helpdesk 2.6.1 `get_email` (../shared/bench-peers/django_helpdesk/, in
its own venv, made once under --peer-venv) over its own copy of the corpus in another folder of
the same Dovecot, against the same sink, and prints the ratio.

--corpus real uses the GENERATED real-shaped complaints of bench/realmail.py (several paragraphs,
every registration detail, many against a few shops, GBK and UTF-8, HTML parts, attachments)
instead of the short synthetic ones of bench/ingest_maildir.py.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ingest_maildir import make_message
from realmail import corpus as real_corpus
from servers import (
    REPO,
    Dovecot,
    SinkProcess,
    caseloop,
    chunks,
    db,
    multiappend,
    start_dovecot,
    vm_kb,
    write_config,
)

PEER_DIR = REPO.parent / "shared" / "bench-peers" / "django_helpdesk"
PEER_PACKAGE = "django-helpdesk[teams]==2.6.1"
PEER_FOLDER = "dhbench"


def timed_run(cmd: list[str], **kwargs: object) -> tuple[float, int]:
    """Run a command to its end; (wall seconds, peak RSS in kB as last seen in /proc)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, **kwargs)  # type: ignore[call-overload]
    peak = 0
    while proc.poll() is None:
        peak = max(peak, vm_kb(proc.pid, "VmHWM") or 0)
        time.sleep(0.1)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:4]}... exited {proc.returncode}")
    return elapsed, peak


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:7.0f} msg/s  ({n} in {seconds:.2f} s)"


def peer_venv(path: Path) -> Path:
    python = path / "bin" / "python"
    if not python.exists():
        print(f"peer: making {path} with {PEER_PACKAGE} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        subprocess.run(
            [str(path / "bin" / "pip"), "install", "-q", PEER_PACKAGE],
            check=True,
        )
    return path


def run_peer(
    args: argparse.Namespace, dovecot: Dovecot, sink: SinkProcess, corpus: list[bytes], root: Path
) -> float:
    venv = peer_venv(Path(args.peer_venv))
    n = len(corpus)
    multiappend(dovecot, corpus, PEER_FOLDER)
    env = {
        **os.environ,
        "DH_DIR": str(root / "peer-run"),
        "IMAP_PORT": str(dovecot.port),
        "IMAP_USER": dovecot.user,
        "IMAP_PASS": dovecot.password,
        "IMAP_FOLDER": PEER_FOLDER,
        "DH_SMTP_PORT": str(sink.port),
        "DJANGO_SETTINGS_MODULE": "settings",
        "PYTHONPATH": ".",
    }
    (root / "peer-run").mkdir()
    admin = str(venv / "bin" / "django-admin")
    # Django's system-check warnings go to a log, not the screen.
    log = (root / "peer.log").open("ab")
    quiet = {"cwd": PEER_DIR, "env": env, "stdout": subprocess.DEVNULL, "stderr": log}
    subprocess.run([admin, "migrate", "-v0"], check=True, **quiet)  # type: ignore[call-overload]
    subprocess.run([str(venv / "bin" / "python"), "setup_queue.py"], check=True, **quiet)  # type: ignore[call-overload]
    sink.reset()
    elapsed, peak = timed_run([admin, "get_email"], **quiet)
    sent = sink.count()
    with sqlite3.connect(root / "peer-run" / "dh.sqlite3") as conn:
        tickets = conn.execute("select count(*) from helpdesk_ticket").fetchone()[0]
    print(
        f"peer django-helpdesk get_email: {rate(n, elapsed)} -> {tickets} tickets, "
        f"{sent} mails at the sink, peak RSS {peak / 1024:.0f} MB"
    )
    return n / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000)
    parser.add_argument("--peer", action="store_true", help="also time django-helpdesk 2.6.1")
    parser.add_argument("--peer-n", type=int, help="messages for the peer (default: -n)")
    parser.add_argument(
        "--peer-venv",
        default=str(
            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
            / "caseloop-bench"
            / "django-helpdesk-2.6.1"
        ),
    )
    parser.add_argument(
        "--corpus",
        choices=("short", "real"),
        default="short",
        help="short synthetic mails (ingest_maildir.py) or real-shaped ones (realmail.py)",
    )
    parser.add_argument("--keep", help="work in this folder and keep it")
    args = parser.parse_args()
    n = args.n

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="caseloop-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    dovecot = start_dovecot()
    sink = SinkProcess()
    try:
        if args.corpus == "real":
            corpus = real_corpus(n)
        else:
            rng = random.Random(7)
            corpus = [make_message(i, rng) for i in range(n)]
        t0 = time.perf_counter()
        multiappend(dovecot, corpus)
        print(
            f"APPENDed {n} {args.corpus} messages ({sum(map(len, corpus)) / n / 1024:.1f} kB on "
            f"average) to Dovecot in {time.perf_counter() - t0:.1f} s ({os.cpu_count()} cores)"
        )

        # Stage 1: Dovecot batch FETCH, 100 UIDs per round trip, as the IMAP source does.
        from imapclient import IMAPClient

        client = IMAPClient(dovecot.host, dovecot.port, ssl=False, timeout=60)
        client.login(dovecot.user, dovecot.password)
        t0 = time.perf_counter()
        client.select_folder("INBOX", readonly=True)
        uids = sorted(client.search(["UNDELETED"]))
        raws: list[bytes] = []
        for chunk in chunks(uids, 100):
            fetched = client.fetch(chunk, [b"BODY.PEEK[]"])
            raws += [bytes(fetched[uid][b"BODY[]"]) for uid in chunk]
        fetch_s = time.perf_counter() - t0
        client.logout()
        assert len(raws) == n, (len(raws), n)

        # Stage 2: parsing alone.
        from handlers.parse import parse_message

        t0 = time.perf_counter()
        for raw in raws:
            parse_message(raw)
        parse_s = time.perf_counter() - t0
        del raws

        # caseloop itself: run --once to tickets plus acks delivered.
        config = write_config(root, imap=dovecot, smtp_port=sink.port)
        # The schema is made before the clock starts, as the peer's `migrate` is.
        subprocess.run(caseloop(config, "migrate"), check=True, stdout=subprocess.DEVNULL)
        sink.reset()
        run_s, peak = timed_run(caseloop(config, "run", "--once"), stdout=subprocess.DEVNULL)
        acks = sink.count()
        with db(root) as conn:
            tickets = conn.execute("select count(*) from tickets").fetchone()[0]
            sent = conn.execute("select count(*) from outbox where status='sent'").fetchone()[0]
            ack_raws = [r for (r,) in conn.execute("select raw from outbox order by id")]
            recipients = [r for (r,) in conn.execute("select recipient from outbox order by id")]

        # Stage 3: the sink fed by a bare smtplib client over one connection, the same acks.
        sink.reset()
        t0 = time.perf_counter()
        with smtplib.SMTP("127.0.0.1", sink.port, timeout=60) as smtp:
            for raw, to in zip(ack_raws, recipients, strict=True):
                smtp.sendmail(dovecot.user, [to], raw)
        smtp_s = time.perf_counter() - t0
        smtp_n = len(ack_raws)
        assert sink.count() == smtp_n

        stages = {
            "Dovecot batch FETCH": n / fetch_s,
            "parse_message alone": n / parse_s,
            "SMTP sink, bare smtplib": smtp_n / smtp_s if smtp_n else float("inf"),
        }
        print("bare stage rates (same run):")
        print(f"  Dovecot batch FETCH (100/round trip): {rate(n, fetch_s)}")
        print(f"  parse_message alone:                  {rate(n, parse_s)}")
        print(f"  SMTP sink fed by bare smtplib:        {rate(smtp_n, smtp_s)}")
        serial = 1 / sum(1 / r for r in stages.values())
        print(f"  the three one after the other:        {serial:7.0f} msg/s")
        slowest = min(stages, key=lambda k: stages[k])
        ours = n / run_s
        print(
            f"caseloop run --once: {rate(n, run_s)} -> {tickets} tickets, {sent} acks sent, "
            f"{acks} at the sink, peak RSS {peak / 1024:.0f} MB"
        )
        print(
            f"ratio run / slowest stage ({slowest}, {stages[slowest]:.0f} msg/s): "
            f"{ours / stages[slowest]:.2f}"
        )
        ok = tickets == n and sent == n and acks == n
        if args.peer:
            peer_corpus = corpus[: args.peer_n or n]
            peer_rate = run_peer(args, dovecot, sink, peer_corpus, root)
            print(f"ratio caseloop / django-helpdesk: {ours / peer_rate:.1f}x")
        return 0 if ok else 1
    finally:
        sink.stop()
        dovecot.remove()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
