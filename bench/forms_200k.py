"""Benchmark: a 200,000-row web-form CSV -> `caseloop run --once` -> cases, with RSS sampled.

    .venv/bin/python bench/forms_200k.py [-n 200000] [--encoding utf-8|gbk] [--db URL]
                                         [--source-only] [--interval 0.5] [--keep DIR]

Writes one export the way an exporter does (a .tmp file renamed into the [[forms]] folder),
dated a minute back so the source takes it as complete at once, then runs `caseloop run --once`
as a real subprocess on the embedded SQLite (or --db) and samples its VmRSS from /proc. Prints
rows per second to cases (wall time of the whole run: parse, decide, commit, acknowledgements
delivered to the Maildir outbox), the RSS series and the peak (VmHWM), and checks that every
row with an email became exactly one case with one mail, the rows without are quarantined, and
the file went to processed/ with its report.

--intake-only runs the same App in a subprocess but only polls (cases committed with their
acknowledgements queued in the outbox, nothing delivered): rows/s to cases without the Maildir
outbox writer. --source-only drains the FormSource alone (no database, no pipeline): the
streaming reader's own rows/s and memory.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from servers import run_caseloop, start_caseloop, vm_kb  # bench/servers.py

HEADER = ["提交编号", "提交时间", "姓名", "邮箱", "电话", "被投诉方", "订单号", "购买日期", "金额"]
HEADER += ["投诉内容", "诉求", "来源渠道"]
FORMS_TOML = """
[[forms]]
name = "web"
path = "forms/web"
format = "auto"
id_column = "提交编号"
[forms.columns]
email = "邮箱"
name = "姓名"
phone = "电话"
respondent = "被投诉方"
order_number = "订单号"
purchase_date = "购买日期"
amount = "金额"
description = "投诉内容"
demand = "诉求"
"""
ZH = [
    "我在贵店购买的电饭煲使用三天后无法加热，要求退货退款。",
    "快递延误十天仍未送达，客服态度恶劣，请尽快处理。",
    "收到的商品与描述不符，存在虚假宣传，要求赔偿。",
    "手机屏幕第二天就出现裂纹，商家拒绝保修。",
]
EN = [
    "The blender I bought stopped working after a week and the shop ignores my mails.",
    "My parcel is two weeks late and nobody answers my calls.",
]
SHOPS = ["某某电器有限公司", "快客物流", "好物商城", "KettleCo Ltd"]


def write_export(path: Path, n: int, encoding: str, seed: int = 11) -> dict[str, int]:
    """n rows: about 1% without email, 4% without a respondent (asked for), the rest complete."""
    rng = random.Random(seed)
    counts = {"rows": n, "no_email": 0, "incomplete": 0}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding=encoding, newline="") as fh:
        writer = csv.writer(fh, lineterminator="\r\n")
        writer.writerow(HEADER)
        for i in range(n):
            zh = rng.random() < 0.7
            email = f"consumer{i}@example.net"
            shop = rng.choice(SHOPS)
            roll = rng.random()
            if roll < 0.01:
                email, counts["no_email"] = "", counts["no_email"] + 1
            elif roll < 0.05:
                shop, counts["incomplete"] = "", counts["incomplete"] + 1
            writer.writerow(
                [
                    f"S{i:08d}",
                    "2026-11-20 10:00",
                    f"用户{i}" if zh else f"User {i}",
                    email,
                    f"138{rng.randrange(10**8):08d}",
                    shop,
                    f"2026{rng.randrange(10**8):08d}",
                    "2026-11-01",
                    f"{rng.randrange(20, 5000)}.00",
                    rng.choice(ZH) if zh else rng.choice(EN),
                    "退货退款" if zh else "refund",
                    "官网",
                ]
            )
    os.replace(tmp, path)  # the exporter's rename: the folder never shows a partial file
    then = time.time() - 60  # dropped a minute ago: complete, as far as the source can tell
    os.utime(path, (then, then))
    return counts


def children(pid: int) -> list[int]:
    """Child processes of pid (run --once's delivery process, when it starts one)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listed:
            return [int(c) for c in listed.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def sample(
    proc: subprocess.Popen[bytes], interval: float, progress: Path | None
) -> tuple[list[tuple[float, int, int, int]], int, int]:
    """(seconds, RSS kB, children's RSS kB, rows taken in) every `interval` until the process
    ends; its peak kB and its children's (each child's VmHWM, summed)."""
    t0 = time.perf_counter()
    samples: list[tuple[float, int, int, int]] = []
    peak = 0
    child_peaks: dict[int, int] = {}
    while proc.poll() is None:
        rss = vm_kb(proc.pid)
        peak = max(peak, vm_kb(proc.pid, "VmHWM") or 0)
        kids = 0
        for child in children(proc.pid):
            kids += vm_kb(child) or 0
            child_peaks[child] = max(child_peaks.get(child, 0), vm_kb(child, "VmHWM") or 0)
        done = 0
        if progress is not None and progress.exists():
            try:
                with sqlite3.connect(f"file:{progress}?mode=ro", uri=True) as db:
                    done = db.execute("select count(*) from source_items").fetchone()[0]
            except sqlite3.Error:
                pass
        if rss is not None:
            samples.append((time.perf_counter() - t0, rss, kids, done))
        time.sleep(interval)
    return samples, peak, sum(child_peaks.values())


def print_series(samples: list[tuple[float, int, int, int]]) -> None:
    step = max(1, len(samples) // 12)
    for t, rss, kids, done in samples[::step] + samples[-1:]:
        aside = f" (+ {kids / 1024:.1f} MB delivery process)" if kids else ""
        print(f"  {t:7.1f} s  RSS {rss / 1024:7.1f} MB{aside}  rows taken in {done}")


def drain_source(folder: Path) -> int:
    """--source-only child: stream every row out of the folder, settling each as a case."""
    from daemon.config import FormConfig
    from daemon.sources.forms import FormSource

    columns = {
        "email": "邮箱",
        "name": "姓名",
        "phone": "电话",
        "respondent": "被投诉方",
        "order_number": "订单号",
        "purchase_date": "购买日期",
        "amount": "金额",
        "description": "投诉内容",
        "demand": "诉求",
    }
    source = FormSource(FormConfig(name="web", path=folder, id_column="提交编号", columns=columns))
    t0, cpu0, rows = time.perf_counter(), time.process_time(), 0
    while items := source.fetch(200):
        rows += len(items)
        source.settle_batch([(i, "ticket") for i in items])
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    hwm = vm_kb(os.getpid(), "VmHWM")
    print(json.dumps({"rows": rows, "seconds": elapsed, "cpu": cpu, "hwm_kb": hwm}))
    return 0


def poll_only(config: Path) -> int:
    """--intake-only child: App.poll_all until no source has work; nothing is delivered."""
    from daemon import config as configmod
    from daemon.app import App

    app = App(configmod.load(config))
    t0, cpu0, rows = time.perf_counter(), time.process_time(), 0
    while True:
        summary = app.poll_all()
        if not summary.work_done:
            break
        rows += sum(summary.outcomes.values()) - summary.outcomes["known"]
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    app.close()
    hwm = vm_kb(os.getpid(), "VmHWM")
    print(json.dumps({"rows": rows, "seconds": elapsed, "cpu": cpu, "hwm_kb": hwm}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200_000)
    parser.add_argument("--encoding", default="utf-8", help="utf-8 or gbk (Excel in China)")
    parser.add_argument("--db", help="database URL (default: the embedded SQLite)")
    parser.add_argument("--source-only", action="store_true", help="the reader alone, no cases")
    parser.add_argument("--intake-only", action="store_true", help="cases, no mail delivered")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--keep", help="work in this folder and keep it")
    parser.add_argument("--drain", help=argparse.SUPPRESS)  # the --source-only child
    parser.add_argument("--poll", help=argparse.SUPPRESS)  # the --intake-only child
    args = parser.parse_args()
    if args.drain:
        return drain_source(Path(args.drain))
    if args.poll:
        return poll_only(Path(args.poll))

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="caseloop-forms-"))
    folder = root / "forms" / "web"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        export = folder / "export.csv"
        counts = write_export(export, args.n, args.encoding)
        size = export.stat().st_size
        print(
            f"generated {args.n} rows ({size / 2**20:.1f} MB, {args.encoding}) "
            f"in {time.perf_counter() - t0:.1f} s"
        )

        if args.source_only:
            me = [sys.executable, os.path.abspath(__file__), "--drain", str(folder)]
            proc = subprocess.Popen(me, stdout=subprocess.PIPE)
            samples, peak, _ = sample(proc, args.interval, None)
            out, _ = proc.communicate()
            result = json.loads(out)
            peak = max(peak, result["hwm_kb"] or 0)
            print(
                f"source only: {result['rows']} rows in {result['seconds']:.1f} s = "
                f"{result['rows'] / result['seconds']:.0f} rows/s "
                f"({result['rows'] / result['cpu']:.0f} per CPU second); "
                f"peak RSS {peak / 1024:.1f} MB"
            )
            print_series(samples)
            return 0 if result["rows"] == args.n else 1

        config = root / "caseloop.toml"
        lines = ['data_dir = "caseloop-data"']
        if args.db:
            lines += ["[database]", f'url = "{args.db}"']
        config.write_text("\n".join(lines) + "\n" + FORMS_TOML, encoding="utf-8")
        if args.db:
            run_caseloop("migrate", config=config, timeout=None, stdout=subprocess.DEVNULL)
        db_path = root / "caseloop-data" / "caseloop.db"

        if args.intake_only:
            me = [sys.executable, os.path.abspath(__file__), "--poll", str(config)]
            proc = subprocess.Popen(me, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            samples, peak, _ = sample(proc, args.interval, None if args.db else db_path)
            out, _ = proc.communicate()
            result = json.loads(out)
            peak = max(peak, result["hwm_kb"] or 0)
            print(
                f"intake only: {result['rows']} rows to cases (acks queued, not delivered) in "
                f"{result['seconds']:.1f} s = {result['rows'] / result['seconds']:.0f} rows/s "
                f"({result['rows'] / result['cpu']:.0f} per CPU second, {os.cpu_count()} cores); "
                f"peak RSS {peak / 1024:.1f} MB"
            )
            print_series(samples)
            return 0 if result["rows"] == args.n else 1

        t0 = time.perf_counter()
        proc = start_caseloop(
            "run",
            "--once",
            config=config,
            log_level="WARNING",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        samples, peak, child_peak = sample(proc, args.interval, None if args.db else db_path)
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"caseloop run --once exited {proc.returncode}")
            return 1

        expected_cases = args.n - counts["no_email"]
        mails = len(os.listdir(root / "caseloop-data" / "outbox" / "new"))
        cases = quarantined = asks = None
        if not args.db:
            with sqlite3.connect(db_path) as db:
                cases = db.execute("select count(*) from tickets").fetchone()[0]
                quarantined = db.execute(
                    "select count(*) from source_items where outcome = 'quarantined'"
                ).fetchone()[0]
                asks = db.execute(
                    "select count(*) from outbox where kind = 'request_info'"
                ).fetchone()[0]
        processed = sorted(p.name for p in (folder / "processed").iterdir())
        print(
            f"run --once: {args.n} rows -> {cases} cases ({asks} asking for missing details), "
            f"{quarantined} quarantined, {mails} mails in {elapsed:.1f} s = "
            f"{args.n / elapsed:.0f} rows/s ({os.cpu_count()} cores); "
            f"peak RSS {peak / 1024:.1f} MB"
            + (
                f" (delivery process beside intake: {child_peak / 1024:.1f} MB)"
                if child_peak
                else ""
            )
        )
        print_series(samples)
        print(f"processed/: {', '.join(processed)}")
        ok = mails == expected_cases and len(processed) == 2
        if not args.db:
            ok = ok and cases == expected_cases and quarantined == counts["no_email"]
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
