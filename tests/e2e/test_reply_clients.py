"""A consumer's reply from any common client lands on the right case with the quote stripped,
whichever one of Message-ID, subject tag or reply token survived the trip.

Table-driven over the real-shaped replies in tests/data/threads/ (Gmail, Outlook, QQ Mail,
Foxmail, 163, 126 mobile, Apple Mail, Thunderbird; zh-CN and en). For each, caseloop opens three
cases: one from someone else, the target from the replying consumer, and a later one from the
same consumer. The client's reply, body bytes untouched, is rewritten to point at the target in
exactly one way:

- message-id: In-Reply-To/References chained to our acknowledgement, the subject's tag removed;
- subject-tag: only the [NUMBER] tag in the subject (after the client's own prefix), no
  In-Reply-To/References;
- reply-token: only the To: address, our acknowledgement's Reply-To (support+NUMBER.token@),
  the subject's tag removed, no In-Reply-To/References.

It must thread onto the target (no new case, no new acknowledgement), as the consumer's own
entry, with only the new text on the timeline, and change no case's status.
"""

from __future__ import annotations

import email
import re
from collections.abc import Callable
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path

import pytest
from relay import body, edit_headers
from replies import REPLIES
from sqlalchemy import func, select

from daemon.app import App
from daemon.clock import MovableClock
from daemon.maildirs import deliver_to_maildir
from daemon.store.models import OutboxMessage, Ticket, TimelineEntry

THREADS = Path(__file__).parent.parent / "data" / "threads"
CONFIG = '[intake]\nack_max_age = "365 days"\n'
CORPUS_NUMBER = "TS-20261124-0007"  # the case the corpus replies were written to
CORPUS_TAG = re.compile(r"\[TS-20261124-0007\]\s*")
ENCODED_WORD = re.compile(rb"(?im)^subject:[ \t]*=\?([\w-]+)\?[bq]\?")

CLIENTS = REPLIES  # (file, what the consumer wrote: the timeline's text)

WAYS = ["message-id", "subject-tag", "reply-token"]

# What must never reach the timeline: quote attributions, separators, header blocks, footers.
QUOTE_MARKERS = [
    "wrote:",
    "写道",
    "原始邮件",
    "Original Message",
    "发件人",
    "From:",
    "发自我的",
    "Sent from my",
]

THREAD_HEADERS = ["In-Reply-To", "References", "Subject", "Thread-Topic", "Thread-Index"]


def complain(app: App, clock: MovableClock, sender: str, subject: str, body: str) -> None:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Date"] = format_datetime(clock.now())
    msg["Message-ID"] = make_msgid(domain=sender.partition("@")[2])
    msg.set_content(body)
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    deliver_to_maildir(inbox, msg.as_bytes())


def pointed_at(raw: bytes, way: str, number: str, ack: EmailMessage) -> bytes:
    """The client's reply pointing at case `number` in exactly one way; the body untouched."""
    original = email.message_from_bytes(raw, policy=policy.default)
    subject = str(original["Subject"])
    neutral = CORPUS_TAG.sub("", subject)  # "Re: Blender arrived ...", "回复：退款申请已受理"
    declared = ENCODED_WORD.search(raw)  # re-encoded as the client did: gb18030, gb2312...
    charset = declared[1].decode().lower() if declared else "utf-8"
    if way == "message-id":
        chain = f"{ack['References']} {ack['Message-ID']}".strip()
        add = [("Subject", neutral), ("In-Reply-To", ack["Message-ID"]), ("References", chain)]
        return edit_headers(raw, drop=THREAD_HEADERS, add=add, charset=charset)
    if way == "subject-tag":
        tagged = subject.replace(CORPUS_NUMBER, number)  # the client's prefix and spacing kept
        return edit_headers(raw, drop=THREAD_HEADERS, add=[("Subject", tagged)], charset=charset)
    assert way == "reply-token"
    token = parseaddr(str(ack["Reply-To"]))[1]
    assert token.startswith(f"support+{number}.")
    add = [("Subject", neutral), ("To", token)]
    return edit_headers(raw, drop=[*THREAD_HEADERS, "To"], add=add, charset=charset)


def pointers(raw: bytes, number: str, ack: EmailMessage) -> set[str]:
    """Which of the three ways the rewritten reply carries (the test's own check)."""
    msg = email.message_from_bytes(raw, policy=policy.default)
    found = set()
    ours = {str(ack["Message-ID"]), *str(ack["References"] or "").split()}
    if ours & set(f"{msg['In-Reply-To'] or ''} {msg['References'] or ''}".split()):
        found.add("message-id")
    if f"[{number}]" in str(msg["Subject"]) or "TS-" in str(msg["Subject"]):
        found.add("subject-tag")
    recipients = f"{msg['To'] or ''} {msg['Cc'] or ''} {msg['Delivered-To'] or ''}"
    if "support+" in recipients:
        found.add("reply-token")
    return found


def snapshot(app: App) -> dict[str, tuple[str, int]]:
    """Each case's status and number of timeline entries."""
    with app.sessions() as session:
        return {t.number: (t.status, len(t.timeline)) for t in session.scalars(select(Ticket))}


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(("name", "new_text"), CLIENTS, ids=[c[0][:-4] for c in CLIENTS])
def test_a_client_reply_lands_on_its_case_with_only_the_new_text(
    make_app: Callable[..., App], clock: MovableClock, name: str, new_text: str, way: str
) -> None:
    raw = (THREADS / name).read_bytes()
    reply = email.message_from_bytes(raw, policy=policy.default)
    consumer = parseaddr(str(reply["From"]))[1].lower()
    topic = str(reply["Subject"]).partition(f"[{CORPUS_NUMBER}]")[2].strip()
    app = make_app(CONFIG)

    complain(app, clock, "decoy@example.net", "另一位顾客的投诉", "洗衣机漏水，要求维修。")
    complain(app, clock, consumer, topic, f"{topic}. 请尽快处理 / please help.")
    complain(app, clock, consumer, "第二个问题 / another issue", "发票开错了 / wrong invoice.")
    app.run_once()
    with app.sessions() as session:
        target = session.scalars(select(Ticket).where(Ticket.subject == topic)).one()
        ack_row = session.scalars(
            select(OutboxMessage).where(OutboxMessage.ticket_id == target.id)
        ).one()
    number = target.number
    ack = email.message_from_bytes(ack_row.raw, policy=policy.default)
    assert isinstance(ack, EmailMessage)
    before = snapshot(app)
    assert len(before) == 3

    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    rewritten = pointed_at(raw, way, number, ack)
    assert pointers(rewritten, number, ack) == {way}
    assert body(rewritten) == body(raw)  # byte for byte
    deliver_to_maildir(inbox, rewritten)
    summary = app.run_once()

    assert summary.opened == [] and not summary.set_aside, summary
    with app.sessions() as session:
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 3  # no new ack
        entry = session.scalars(
            select(TimelineEntry).where(TimelineEntry.message_id == str(reply["Message-ID"]))
        ).one()
        landed_on = session.get(Ticket, entry.ticket_id)
        assert landed_on is not None
        assert landed_on.number == number, f"threaded onto {landed_on.number}, not {number}"
    assert entry.direction == "in" and not entry.internal and entry.actor == consumer
    assert entry.text == new_text
    for marker in QUOTE_MARKERS:
        assert marker not in (entry.text or ""), marker
    assert not any(line.startswith(">") for line in (entry.text or "").splitlines())
    after = snapshot(app)
    assert {n: s for n, (s, _) in after.items()} == {n: s for n, (s, _) in before.items()}
    assert {n: len_ for n, (_, len_) in after.items()} == {
        n: len_ + (n == number) for n, (_, len_) in before.items()
    }
