"""A case carried through the procedure by mail, over a real Dovecot and a real SMTP relay.

The consumer writes to the support mailbox (Dovecot, read by caseloop over IMAP); caseloop
mails through the relay (aiosmtpd on loopback), which delivers the consumer's and the staff's
copies into their own Maildirs and everything addressed to support back into Dovecot. The agent
works only from their mailbox: accepts, replies and resolves by answering caseloop's mails. A
forged mail claiming to be the agent changes nothing. The consumer's mailbox ends up holding
exactly the acknowledgement, the acceptance notice, the agent's reply and the resolution, in
one thread, all from the support address.
"""

from __future__ import annotations

import email
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

from relay import Delivery, Relay, maildir_mailbox, stamped
from sqlalchemy import select

from daemon.app import App
from daemon.clock import MovableClock
from daemon.maildirs import deliver_to_maildir, ensure_maildir
from daemon.samples import __file__ as samples_init
from daemon.store.models import Ticket

SUPPORT = "support@example.com"
CONSUMER = "li.lei@example.net"
AGENT = "agent@example.com"
STAFF = f"""
[tickets]  # the default registration essentials, written out: these tests rely on them
mail_essentials = ["name", "respondent", "purchase", "description"]

[escalation]
supervisors = ["lead@example.com"]
urgent_notify = ["compliance@example.com"]

[[staff]]
address = "{AGENT}"
name = "Agent Wang"
groups = ["quality"]

[[routing]]
category = "product_quality"
group = "quality"
"""


def mailbox(path: Path) -> list[EmailMessage]:
    """A Maildir's messages, oldest first."""
    found = []
    for sub in ("new", "cur"):
        folder = path / sub
        if folder.is_dir():
            found += sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    return [
        email.message_from_bytes(p.read_bytes(), policy=policy.default)  # type: ignore[misc]
        for p in found
    ]


def plain(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def write(
    relay: Relay,
    clock: MovableClock,
    sender: str,
    to: str,
    text: str,
    *,
    subject: str,
    parent: EmailMessage | None = None,
    name: str = "",
) -> None:
    msg = EmailMessage()
    msg["From"] = f"{name} <{sender}>" if name else sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(clock.now())
    msg["Message-ID"] = make_msgid(domain=sender.partition("@")[2])
    if parent is not None:
        msg["In-Reply-To"] = parent["Message-ID"]
        msg["References"] = parent["Message-ID"]
    msg.set_content(text)
    relay.submit(sender, to, msg.as_bytes())


def test_an_agent_carries_a_case_by_mail_and_a_forgery_changes_nothing(
    make_app: Callable[..., App],
    relay: Relay,
    clock: MovableClock,
    imap_box: object,
    tmp_path: Path,
) -> None:
    from dovecot import Dovecot

    assert isinstance(imap_box, Dovecot)
    (tmp_path / "imap-password").write_text(imap_box.password + "\n")
    app = make_app(
        '[[mailboxes]]\nname = "support"\ntype = "imap"\n'
        f'address = "{SUPPORT}"\nhost = "{imap_box.host}"\nport = {imap_box.port}\n'
        'security = "none"\npassword_file = "imap-password"\nidle = false\n'
        f'[smtp]\nhost = "127.0.0.1"\nport = {relay.port}\nsecurity = "none"\n' + STAFF
    )
    consumer_box, agent_box, others = (tmp_path / n for n in ("consumer", "agent", "others"))
    for box in (consumer_box, agent_box, others):
        ensure_maildir(box)

    def to_support(relay: Relay, delivery: Delivery) -> None:
        imap_box.append(stamped(delivery))

    relay.route(SUPPORT, to_support)
    relay.route(CONSUMER, maildir_mailbox(consumer_box))
    relay.route(AGENT, maildir_mailbox(agent_box))
    for address in ("lead@example.com", "compliance@example.com"):
        relay.route(address, maildir_mailbox(others))

    def step() -> None:
        """caseloop takes in and delivers; the relay carries everything in flight."""
        relay.process()
        app.run_once()
        relay.process()

    write(
        relay,
        clock,
        CONSUMER,
        SUPPORT,
        "我在京东自营旗舰店买的电水壶（订单号 JD20261101123，299元）用了三天就漏水。要求退货退款。",
        subject="电水壶漏水",
        name="李雷",
    )
    step()
    (assigned,) = mailbox(agent_box)
    number = str(assigned["X-Caseloop-Ticket"])
    assert str(assigned["Reply-To"]).startswith(f"support+{number}.s")

    def agent_answers(text: str) -> None:
        write(
            relay,
            clock,
            AGENT,
            str(assigned["Reply-To"]),
            text,
            subject=f"Re: {assigned['Subject']}",
            parent=assigned,
        )
        step()

    agent_answers("#accept\n\n我们周四上门取件。")
    agent_answers("请提供水壶底座的照片。\n\n-- \n王\n客服部")
    # The forgery: the agent's address in From, threaded onto the case, but sent to the
    # plain support address from outside (no staff token, no trusted DKIM result).
    write(
        relay,
        clock,
        AGENT,
        SUPPORT,
        "#status resolved\n已处理。",
        subject=f"Re: [{number}]",
        parent=assigned,
    )
    step()
    with app.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert ticket.status == "accepted", "the forged command was applied"
    agent_answers("#status resolved\n已为您办理退款 299.00 元，预计 3 个工作日到账。")

    with app.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert (ticket.number, ticket.status) == (number, "resolved")
    got = mailbox(consumer_box)
    texts = [plain(m) for m in got]
    assert len(got) == 4, [str(m["Subject"]) for m in got]
    assert "已登记" in texts[0] or "已收到" in texts[0] or number in texts[0]  # the ack
    assert "已正式受理" in texts[1] and "周四上门取件" in texts[1]
    assert "水壶底座的照片" in texts[2] and "客服部" not in texts[2]
    assert "退款 299.00 元" in texts[3] and "处理结果" in str(got[3]["Subject"])
    for msg in got:
        assert msg["From"].addresses[0].addr_spec == SUPPORT
        assert str(msg["Subject"]).startswith(f"[{number}]")
        assert AGENT not in msg.as_string()
    first = str(got[0]["Message-ID"])
    for earlier, later in zip(got, got[1:], strict=False):
        refs = str(later["References"])
        assert first in refs and str(earlier["Message-ID"]) in refs  # one thread


def test_an_exploded_pressure_cooker_is_urgent_and_compliance_is_mailed_in_one_tick(
    make_app: Callable[..., App], smtp_sink: tuple[object, int]
) -> None:
    sink, port = smtp_sink
    app = make_app(
        f'[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        '[intake]\nack_max_age = "3650 days"\n' + STAFF
    )
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    sample = Path(samples_init).parent / "01-zh-pressure-cooker.eml"
    deliver_to_maildir(inbox, sample.read_bytes())

    app._poll_and_send(app.sources)  # one scheduler tick: take in, then deliver

    with app.sessions() as session:
        ticket = session.scalars(select(Ticket)).one()
        assert (ticket.priority, ticket.category) == ("urgent", "product_quality")
    recipients = {rcpt for _, rcpts, _ in sink.messages for rcpt in rcpts}  # type: ignore[attr-defined]
    assert {"compliance@example.com", "lead@example.com", AGENT} <= recipients
    (alert,) = [
        email.message_from_bytes(raw, policy=policy.default)
        for _, rcpts, raw in sink.messages  # type: ignore[attr-defined]
        if rcpts == ["compliance@example.com"]
    ]
    assert ticket.number in str(alert["Subject"]) and "紧急" in str(alert["Subject"])
