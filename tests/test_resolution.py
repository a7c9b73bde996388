"""However a case is resolved, the consumer gets one resolution notice carrying the result."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from test_staffmail import COMPLAINT, STAFF, body, drop, mail, outbox, staff_reply

from daemon.app import App
from daemon.cli import main
from daemon.store.models import Ticket

RESULT = "已为您办理退款299元，款项3个工作日内到账。"


def open_cases(app: App, consumers: list[str]) -> dict[str, str]:
    """One complaint from each consumer, taken in; their case numbers by address."""
    for address in consumers:
        drop(app, mail(f"李雷 <{address}>", "support@example.com", COMPLAINT))
    app.run_once()
    with app.sessions() as session:
        rows = session.execute(select(Ticket.complainant_email, Ticket.number)).all()
    return {address: number for address, number in rows}


def cli(app: App, tmp_path: Path, *args: str) -> None:
    assert main(["--config", str(tmp_path / "caseloop.toml"), *args]) == 0


def test_every_way_of_resolving_sends_one_resolution_notice_with_the_result(
    make_app, tmp_path: Path
) -> None:
    # each case's own assignment mail (not folded into one), to answer case c by mail
    app: App = make_app(STAFF.replace("[escalation]\n", '[escalation]\nassignment_fold = "0s"\n'))
    by_set, by_reply, by_mail = "a@example.net", "b@example.net", "c@example.net"
    numbers = open_cases(app, [by_set, by_reply, by_mail])
    for address in (by_set, by_reply):
        cli(app, tmp_path, "tickets", "set", numbers[address], "--status", "accepted")
    [assigned] = [
        m for r, m in outbox(app) if r.kind == "assigned" and numbers[by_mail] in str(m["Subject"])
    ]
    drop(app, staff_reply(assigned, "#accept"))
    app.run_once()
    before = {r.id for r, _ in outbox(app)}

    number = numbers[by_set]
    cli(app, tmp_path, "tickets", "set", number, "--status", "resolved", "--reason", RESULT)
    cli(app, tmp_path, "tickets", "reply", numbers[by_reply], "--message", RESULT,
        "--status", "resolved")  # fmt: skip
    drop(app, staff_reply(assigned, f"#status resolved\n\n{RESULT}"))
    app.run_once()

    new = [(r, m) for r, m in outbox(app) if r.id not in before]
    for address in (by_set, by_reply, by_mail):
        mine = [(r, m) for r, m in new if r.recipient == address]
        assert [r.kind for r, _ in mine] == ["resolved"], address  # one mail, the notice
        text = body(mine[0][1])
        assert RESULT in text and "72小时内" in text  # the result, and the follow-up to come
    with app.sessions() as session:
        assert set(session.scalars(select(Ticket.status))) == {"resolved"}
