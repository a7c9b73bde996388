"""A month of complaints through the real pipeline, for `caseloop report` (and its tests).

    .venv/bin/python bench/report_month.py SITE [--days 30] [--per-day 4] [--seed 7]

Writes a caseloop.toml in SITE (SQLite, Maildir in and out) unless one is there, then runs the
App on a movable clock from 1 November 2026: each day some complaints arrive by mail, staff
move open cases on one step (first response, accept or reject with a respondent, start, resolve,
close), surveys go out 72 h after resolution and some consumers answer ("5", "还行", "不满意，
还是漏水", ...), and silence closes the rest. Then try:

    caseloop --config SITE/caseloop.toml report --format html > month.html
"""

from __future__ import annotations

import argparse
import random
import sys
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon import config as configmod
from daemon.app import App
from daemon.clock import MovableClock
from daemon.maildirs import deliver_to_maildir
from daemon.store.models import Ticket
from handlers.workflow import apply_transition

START = datetime(2026, 11, 1, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
STAFF = "agent@example.com"
COMPLAINTS = [
    ("电热水壶漏水", "上周买的电热水壶底部漏水，要求退货退款。"),
    ("快递三周未送达", "订单显示已发货，物流三周没有更新，快递一直没送到。"),
    ("客服态度恶劣", "客服态度很差，挂我电话。"),
    ("价格欺诈", "结账价格比标价高，价格不一致，要求退差价。"),
    ("充电宝起火", "充电宝充电时起火，烫伤了手。"),
    ("Late delivery", "My parcel is three weeks late and the courier does not answer."),
    ("Broken blender", "The blender stopped working after two days, I want a replacement."),
]
RESPONDENTS = ["甲电器公司", "乙物流", "丙商城", "Acme Retail", '=HYPERLINK("http://x")', None]
ANSWERS = ["5", "满意", "还行", "不满意，还是漏水", "谢谢，已经解决了", "2", "请问发票呢？"]


def complaint(rng: random.Random, now: datetime, n: int) -> bytes:
    subject, text = rng.choice(COMPLAINTS)
    msg = EmailMessage()
    msg["From"] = f"consumer{n}@example.cn"
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain="example.cn")
    msg.set_content(f"{text}\n订单号 {2026110000000 + n}")
    return msg.as_bytes()


def answer(ticket: Ticket, now: datetime, text: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = ticket.complainant_email
    msg["To"] = "support@example.com"
    msg["Subject"] = f"回复：[{ticket.number}] 投诉处理结果回访"
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = make_msgid(domain="example.cn")
    msg.set_content(text)
    return msg.as_bytes()


def step(session: Session, app: App, ticket: Ticket, rng: random.Random, now: datetime) -> None:
    """Staff move one open case on by one step, sometimes."""
    moves = {
        "received": ("accepted", 0.55),
        "accepted": ("in_progress", 0.7),
        "in_progress": ("resolved", 0.3),
        "rejected": ("closed", 0.5),
    }
    if ticket.status not in moves:
        return
    new, chance = moves[ticket.status]
    if rng.random() > chance:
        return
    if ticket.status == "received":
        ticket.first_response_at = now - timedelta(hours=rng.randint(0, 20))  # a staff reply
        ticket.first_response_at = max(ticket.first_response_at, ticket.created_at)
        ticket.respondent = rng.choice(RESPONDENTS)
        if rng.random() < 0.1:
            new = "rejected"
    reason = "已为您办理退货退款" if new == "resolved" else None
    if new == "rejected":
        reason = "个人之间的私下交易，不属于受理范围"
    apply_transition(session, app.services, ticket, new, actor=STAFF, now=now, reason=reason)


def generate(app: App, clock: MovableClock, *, days: int, per_day: int, seed: int) -> int:
    """Run `days` days of intake, staff steps, surveys and answers; return the cases opened."""
    rng = random.Random(seed)
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    opened = 0
    answered: set[str] = set()
    for _day in range(days):
        for _ in range(rng.randint(0, 2 * per_day)):
            opened += 1
            deliver_to_maildir(inbox, complaint(rng, clock.now(), opened))
        app.run_once()
        clock.move(timedelta(hours=6))
        with app.sessions.begin() as session:
            tickets = session.scalars(
                select(Ticket).where(Ticket.status.not_in(("closed",))).order_by(Ticket.id)
            ).all()
            for ticket in tickets:
                step(session, app, ticket, rng, clock.now())
            surveyed = [
                t
                for t in tickets
                if t.status == "resolved" and t.survey_sent_at and t.number not in answered
            ]
        for ticket in surveyed:
            if rng.random() < 0.6:
                answered.add(ticket.number)
                deliver_to_maildir(inbox, answer(ticket, clock.now(), rng.choice(ANSWERS)))
        app.run_once()
        clock.move(timedelta(hours=18))
    return opened


def site_config(site: Path) -> Path:
    path = site / "caseloop.toml"
    if not path.exists():
        site.mkdir(parents=True, exist_ok=True)
        path.write_text(
            'data_dir = "caseloop-data"\n'
            "[intake]\nauto_mail_per_address_per_hour = 50\n"
            # the generated complaints are short: they are registered as they are
            "[tickets]\nmail_essentials = []\n"
            '[escalation]\nsupervisors = ["lead@example.com"]\n',
            encoding="utf-8",
        )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--per-day", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    config = configmod.load(site_config(args.site))
    clock = MovableClock(START)
    app = App(config, clock=clock)
    try:
        opened = generate(app, clock, days=args.days, per_day=args.per_day, seed=args.seed)
    finally:
        app.close()
    print(f"{opened} complaints over {args.days} days in {args.site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
