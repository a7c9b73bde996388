"""Benchmark: adversarial mails, one at a time beside an honest neighbour, timed through intake.

    .venv/bin/python bench/hostile.py [--scale 1.0] [--only NAME] [--budget 30]

Each case is a mail built to make some regex, decoder or look-up work hard (long lines without a
full stop, runs of digits, of `@`, of encoded words, a References header of 400k ids, ...). For
each, a fresh embedded caseloop (SQLite, Maildir) takes in that mail and one honest complaint in
one `run_once`; the script prints the wall time, what became of the hostile mail (a case, or set
aside and why) and whether the neighbour became a case. It exits 1 when any case takes longer
than --budget seconds or its neighbour is not a case. --scale multiplies the sizes (1.0 is the
sizes the hostile-input issue names: 120,000 characters, 1.1M encoded words at --scale 1).
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import servers  # noqa: F401  (puts tests/ on the path)
from conftest import write_config

from daemon import config as configmod
from daemon.app import App
from daemon.clock import MovableClock
from daemon.maildirs import deliver_to_maildir

HEAD = (
    "From: Mallory <mallory@example.net>\r\nTo: support@example.com\r\n"
    "Date: Thu, 03 Dec 2026 10:00:00 +0800\r\nMessage-ID: <{mid}@example.net>\r\n"
    "MIME-Version: 1.0\r\n"
)


def plain(subject: str, body: str, mid: str, extra: str = "") -> bytes:
    sub = "=?utf-8?b?" + base64.b64encode(subject.encode()).decode() + "?="
    return (
        HEAD.format(mid=mid)
        + extra
        + f"Subject: {sub}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        + "Content-Transfer-Encoding: 8bit\r\n\r\n"
        + body
        + "\r\n"
    ).encode()


def cases(n: int) -> dict[str, Callable[[str], bytes]]:
    """Name -> (Message-ID -> raw mail), with lines of about n characters."""
    commas = "这个商品质量很差，" * (n // 9)
    words = n * 9  # 1.1M encoded words at n = 120,000
    return {
        "comma-line-body": lambda m: plain("投诉", commas + "。我要求退款。", m),
        "comma-line-subject": lambda m: plain(commas + "。要求退款", "见标题。", m),
        "encoded-words-subject": lambda m: (
            HEAD.format(mid=m)
            + "Subject: "
            + "\r\n ".join(["=?utf-8?b?5Lit?="] * words)
            + "\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n投诉内容。\r\n"
        ).encode(),
        "digits": lambda m: plain("投诉", "订单号" + "1" * n + " 金额" + "9" * n, m),
        "digit-groups": lambda m: plain("投诉", "电话 " + "138 " * (n // 4), m),
        "amounts": lambda m: plain("投诉", "¥" + "1," * (n // 2) + "元", m),
        "at-signs": lambda m: plain("complaint", "a@" * (n // 2), m),
        "dots": lambda m: plain("complaint", "a." * (n // 2) + " b", m),
        "spaces": lambda m: plain("complaint", "x" + " \t" * (n // 2) + "y", m),
        "dates": lambda m: plain("投诉", "2026年" * (n // 5), m),
        "order-words": lambda m: plain("投诉", "订单号：" * (n // 4), m),
        "names": lambda m: plain("投诉", "我叫" * (n // 2), m),
        "demand-words": lambda m: plain("投诉", "要求退款赔偿道歉" * (n // 8), m),
        "english-words": lambda m: plain("complaint", "refund " * (n // 7), m),
        "url": lambda m: plain("complaint", "http://" + "a" * n, m),
        "quotes": lambda m: plain("Re: complaint", "> " * (n // 2) + "\r\nok", m),
        "html-nesting": lambda m: (
            HEAD.format(mid=m)
            + "Subject: x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            + "<div>" * (n // 5)
            + "投诉"
            + "</div>" * (n // 5)
            + "\r\n"
        ).encode(),
        "references": lambda m: plain(
            "Re: 投诉",
            "还没处理。",
            m,
            "References: " + " ".join(f"<{i}@x>" for i in range(n * 10 // 3)) + "\r\n",
        ),
        "case-numbers": lambda m: plain("Re: [TS-20261203-0001] " * (n // 24), "x", m),
    }


HONEST = plain("投诉：电饭煲无法加热", "我在某店买的电饭煲三天后无法加热，要求退货退款。", "honest")


def run_case(name: str, raw: bytes, budget: float) -> tuple[float, str, bool]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = configmod.load(write_config(root, '[intake]\nack_max_age = "365 days"\n'))
        app = App(config, clock=MovableClock(datetime(2026, 12, 4, 2, 0, tzinfo=UTC)))
        try:
            inbox = config.mailboxes[0].path
            assert inbox is not None
            deliver_to_maildir(inbox, raw, name="hostile")
            deliver_to_maildir(inbox, HONEST, name="honest")
            started = time.perf_counter()
            summary = app.run_once()
            took = time.perf_counter() - started
        finally:
            app.close()
        aside = {item: why for _, item, _, why in summary.set_aside}
        fate = f"set aside: {aside['hostile'][:80]}" if "hostile" in aside else "taken in"
        cases = 1 if "hostile" in aside else 2
        return took, fate, "honest" not in aside and len(summary.opened) == cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", default=None)
    parser.add_argument("--budget", type=float, default=30.0)
    args = parser.parse_args()
    n = int(120_000 * args.scale)
    failed = 0
    for name, make in cases(n).items():
        if args.only and name != args.only:
            continue
        raw = make(name)
        took, fate, neighbour = run_case(name, raw, args.budget)
        bad = took > args.budget or not neighbour
        failed += bad
        print(
            f"{'FAIL' if bad else 'ok  '} {name:24} {len(raw) / 1e6:7.2f} MB {took:7.2f} s  "
            f"{fate}; neighbour {'a case' if neighbour else 'LOST'}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
