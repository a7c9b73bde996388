"""Benchmark: single APPENDs to an IDLE mailbox, time until each one's ack reaches the SMTP sink.

    .venv/bin/python bench/idle_latency.py [-n 100] [--gap 0.0:0.6] [--table]

`caseloop run` waits on the mailbox with IDLE (poll_interval 30s, so a message the daemon misses
waits visibly for the next poll). Beside it, in the same run and for the same APPENDs, a bare
imapclient IDLE client on the same folder times Dovecot's own notification: its floor (Dovecot
coalesces changes for about half a second before it tells an IDLE client). Both are measured from
the moment the APPEND command completed. After each ack the next APPEND waits a random gap
(--gap, seconds), so APPENDs land anywhere in the daemon's cycle: while it takes in, delivers,
polls once more, or re-enters IDLE. Dovecot's notification of a message is sometimes early, when
it rides on the daemon's own MOVE of the message before, or missing, when the daemon moved the
message out before the watcher's turn; so a message counts as late when its ack came later than
1 s after its own notification or the run's median one, whichever is later. Prints p50/p99/max
of both, the late count, and with --table one row per message.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from imapclient import IMAPClient
from ingest_maildir import make_message
from servers import (
    Dovecot,
    Sink,
    caseloop,
    db,
    header_ids,
    percentile,
    start_dovecot,
    write_config,
)

POLL_INTERVAL = 30.0  # the daemon's poll_interval: a missed message waits up to this long
LATE_AFTER = 1.0  # seconds beyond the message's own floor


class FloorClient(threading.Thread):
    """A bare IDLE client: notes the monotonic time of every `* N EXISTS` it is told."""

    def __init__(self, server: Dovecot) -> None:
        super().__init__(daemon=True, name="floor-idle")
        self.client = IMAPClient(server.host, server.port, ssl=False, timeout=30)
        self.client.login(server.user, server.password)
        self.client.select_folder("INBOX")
        self.events: list[float] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.ready = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.client.idle()
            self.ready.set()
            renew = time.monotonic() + 600
            while not self.stopping.is_set() and time.monotonic() < renew:
                for response in self.client.idle_check(timeout=0.2):
                    if isinstance(response, tuple) and response[1:2] == (b"EXISTS",):
                        with self.lock:
                            self.events.append(time.monotonic())
            self.client.idle_done()
        self.client.logout()

    def first_after(self, t: float) -> float | None:
        with self.lock:
            return next((e for e in self.events if e >= t), None)


def wait_until_polled(root: Path, timeout: float = 30) -> None:
    """Until the daemon is up and has polled once (it records each poll in source_state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with db(root) as conn:
                if conn.execute("select count(*) from source_state").fetchone()[0]:
                    return
        except Exception:  # noqa: BLE001 - not created or migrated yet
            pass
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100, help="APPENDs measured (after one warm-up)")
    parser.add_argument("--gap", default="0.0:0.6", help="MIN:MAX seconds between ack and APPEND")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--table", action="store_true", help="one row per message")
    parser.add_argument("--keep", help="work in this folder and keep it")
    args = parser.parse_args()
    gap_min, gap_max = (float(x) for x in args.gap.split(":"))

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="caseloop-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    dovecot = start_dovecot()
    sink = Sink().start()
    config = write_config(
        root, imap=dovecot, smtp_port=sink.port, poll_interval=f"{POLL_INTERVAL:g}s"
    )
    log = (root / "daemon.log").open("wb")
    proc = subprocess.Popen(
        caseloop(config, "run", log_level="INFO"), stdout=subprocess.DEVNULL, stderr=log
    )
    floor = FloorClient(dovecot)
    floor.start()
    appender = dovecot.client()
    rng = random.Random(args.seed)
    rows: list[tuple[int, float, float | None, float | None]] = []  # i, gap, floor, ack
    try:
        floor.ready.wait(10)
        wait_until_polled(root)
        gap = 0.0
        for i in range(args.n + 1):  # the first one warms up and is not counted
            raw = make_message(i, rng)
            message_id, _ = header_ids(raw)
            appender.append("INBOX", raw)
            t0 = time.monotonic()

            def arrived(mid: str | None = message_id) -> bool:
                return any(reply_to == mid for _, _, reply_to in sink.handler.arrivals[-5:])

            acked = sink.handler.wait(arrived, POLL_INTERVAL + 15)
            at = next((t for t, _, r in sink.handler.arrivals if r == message_id), None)
            notified = floor.first_after(t0 - 0.05)
            if i > 0:
                rows.append(
                    (
                        i,
                        gap,
                        None if notified is None else notified - t0,
                        None if not acked or at is None else at - t0,
                    )
                )
            gap = rng.uniform(gap_min, gap_max)
            time.sleep(gap)
    finally:
        appender.logout()
        floor.stopping.set()
        floor.join(5)
        proc.terminate()
        proc.wait(30)
        log.close()
        sink.stop()
        dovecot.remove()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    code = subprocess.run(
        [sys.executable, "-c", "import daemon; print(daemon.__file__)"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(f"daemon code: {code}, gaps {gap_min:g}-{gap_max:g} s, seed {args.seed}")
    return report(rows, args.table)


def report(rows: list[tuple[int, float, float | None, float | None]], table: bool) -> int:
    floors = [f for _, _, f, _ in rows if f is not None]
    acks = [a for _, _, _, a in rows if a is not None]
    floor_p50 = percentile(floors, 50)
    late: list[int] = []
    if table:
        print("   #   gap ms  floor ms    ack ms  ack-floor")
    for i, gap, f, a in rows:
        own = max(f, floor_p50) if f is not None else floor_p50
        is_late = a is None or a > own + LATE_AFTER
        if is_late:
            late.append(i)
        if table:
            shown_f = f"{f * 1000:8.0f}" if f is not None else "       -"
            shown_a = f"{a * 1000:9.0f}" if a is not None else "  no ack "
            over = f"{(a - own) * 1000:+9.0f}" if a is not None else "        -"
            flag = "  LATE" if is_late else ""
            print(f"{i:4d} {gap * 1000:8.0f}  {shown_f}  {shown_a}  {over}{flag}")

    def ms(values: list[float], p: float) -> str:
        return f"{percentile(values, p) * 1000:6.0f} ms"

    print(f"{len(rows)} single APPENDs, {len(acks)} acked; APPEND done -> ...")
    print(
        f"  Dovecot IDLE notification (bare client): p50 {ms(floors, 50)}  p99 {ms(floors, 99)}"
        f"  max {ms(floors, 100)}"
    )
    print(
        f"  caseloop ack at the SMTP sink:           p50 {ms(acks, 50)}  p99 {ms(acks, 99)}"
        f"  max {ms(acks, 100)}"
    )
    print(f"  late (ack > floor + {LATE_AFTER:g} s): {len(late)}  {late if late else ''}")
    return 0 if not late else 1


if __name__ == "__main__":
    raise SystemExit(main())
