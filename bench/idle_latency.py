"""Benchmark: APPEND one complaint, time until its ack reaches the SMTP sink (`caseloop run`, IDLE).

    .venv/bin/python bench/idle_latency.py [-n 200]

Beside it, in the same run and for the same APPENDs, a bare imapclient IDLE client on the same
folder times Dovecot's own notification (its floor: Dovecot coalesces changes before it tells an
IDLE client). Both are measured from the moment the APPEND command completed. Prints p50/p99.
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="samples")
    parser.add_argument("--keep", help="work in this folder and keep it")
    args = parser.parse_args()

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="caseloop-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    dovecot = start_dovecot()
    sink = Sink().start()
    config = write_config(root, imap=dovecot, smtp_port=sink.port, poll_interval="30s")
    log = (root / "daemon.log").open("wb")
    proc = subprocess.Popen(
        caseloop(config, "run", log_level="INFO"), stdout=subprocess.DEVNULL, stderr=log
    )
    floor = FloorClient(dovecot)
    floor.start()
    appender = dovecot.client()
    rng = random.Random(11)
    ours: list[float] = []
    floors: list[float] = []
    missed = 0
    try:
        floor.ready.wait(10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # the daemon is up and has polled once
            try:
                with db(root) as conn:
                    if conn.execute("select count(*) from source_state").fetchone()[0]:
                        break
            except Exception:  # noqa: BLE001 - not created or migrated yet
                pass
            time.sleep(0.1)
        for i in range(args.n + 1):  # the first one warms up and is not counted
            raw = make_message(i, rng)
            message_id, _ = header_ids(raw)
            appender.append("INBOX", raw)
            t0 = time.monotonic()

            def arrived(mid: str | None = message_id) -> bool:
                return any(reply_to == mid for _, _, reply_to in sink.handler.arrivals[-5:])

            if not sink.handler.wait(arrived, 30):
                missed += 1
                print(f"sample {i}: no ack within 30 s")
                continue
            at = next(t for t, _, reply_to in sink.handler.arrivals if reply_to == message_id)
            notified = floor.first_after(t0 - 0.05)
            if i > 0:
                ours.append(at - t0)
                if notified is not None:
                    floors.append(notified - t0)
            time.sleep(rng.uniform(0.3, 0.6))  # back in IDLE before the next one
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

    def ms(values: list[float], p: float) -> str:
        return f"{percentile(values, p) * 1000:6.0f} ms"

    print(f"{len(ours)} samples ({missed} without an ack), APPEND done -> ...")
    print(f"  Dovecot IDLE notification (bare client): p50 {ms(floors, 50)}  p99 {ms(floors, 99)}")
    print(f"  caseloop ack at the SMTP sink:           p50 {ms(ours, 50)}  p99 {ms(ours, 99)}")
    print(
        f"  caseloop - floor:                        p50 "
        f"{(percentile(ours, 50) - percentile(floors, 50)) * 1000:+6.0f} ms  p99 "
        f"{(percentile(ours, 99) - percentile(floors, 99)) * 1000:+6.0f} ms"
    )
    return 0 if not missed and len(floors) == len(ours) else 1


if __name__ == "__main__":
    raise SystemExit(main())
