"""A mail relay for end-to-end tests: the network between caseloop and the people it writes to.

A real aiosmtpd server on loopback takes caseloop's outgoing mail (its `[smtp]`). Each
recipient's copy is kept in `log` and queued; `process()` then hands every queued copy to the
route of its recipient: a mailbox (the support Maildir caseloop polls, a Dovecot delivery) or a
robot that answers (a header-less auto-responder, a bounce). What a robot answers is submitted to
the relay again and routed in the same `process()` call, so one call settles all mail in flight.

    relay = Relay()
    relay.route("support@example.com", maildir_mailbox(inbox))  # also support+anything@
    relay.route("wang.wu@example.net", headerless_autoreply("wang.wu@example.net", clock.now))
    port = relay.start()
    ...
    relay.process()
    relay.sent_to("wang.wu@example.net")
"""

from __future__ import annotations

import base64
import email
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Any

from daemon.maildirs import deliver_to_maildir


@dataclass(frozen=True)
class Delivery:
    """One recipient's copy of one mail, as the relay took it."""

    mail_from: str  # the envelope sender; "" for the null sender <>
    rcpt: str  # lower-cased
    raw: bytes

    @property
    def message(self) -> EmailMessage:
        msg = email.message_from_bytes(self.raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        return msg

    def header(self, name: str) -> str | None:
        value = self.message[name]
        return None if value is None else str(value)


Route = Callable[["Relay", Delivery], None]


class LoopSuspected(AssertionError):
    """More mail went through one process() call than any test scenario sends: a loop."""


class Relay:
    """aiosmtpd handler plus the routing table; start() runs it on a free loopback port."""

    def __init__(self, max_per_process: int = 200) -> None:
        self.log: list[Delivery] = []
        self.max_per_process = max_per_process
        self.port = 0
        self._routes: dict[str, Route] = {}
        self._pending: deque[Delivery] = deque()
        self._lock = threading.Lock()
        self._controller: Any = None

    # -- SMTP side --------------------------------------------------------------------------

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        sender = envelope.mail_from or ""
        for rcpt in envelope.rcpt_tos:
            self.submit("" if sender == "<>" else sender, rcpt, envelope.content)
        return "250 OK queued"

    def start(self) -> int:
        from aiosmtpd.controller import Controller
        from conftest import free_port

        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()
        return self.port

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    # -- routing ----------------------------------------------------------------------------

    def route(self, address: str, handler: Route) -> None:
        """Mail for `address` (and its plus addresses, local+detail@domain) goes to `handler`."""
        self._routes[address.lower()] = handler

    def submit(self, mail_from: str, rcpt: str, raw: bytes) -> None:
        """Queue one copy, as if an SMTP client had handed it over."""
        delivery = Delivery(mail_from=mail_from, rcpt=rcpt.lower(), raw=raw)
        with self._lock:
            self.log.append(delivery)
            self._pending.append(delivery)

    def process(self) -> int:
        """Route everything queued, including what the routes submit meanwhile."""
        done = 0
        while True:
            with self._lock:
                if not self._pending:
                    return done
                delivery = self._pending.popleft()
            done += 1
            if done > self.max_per_process:
                raise LoopSuspected(f"more than {self.max_per_process} mails in one process()")
            self._handler(delivery.rcpt)(self, delivery)

    def _handler(self, rcpt: str) -> Route:
        if rcpt in self._routes:
            return self._routes[rcpt]
        local, _, domain = rcpt.partition("@")
        base = f"{local.partition('+')[0]}@{domain}"
        if base in self._routes:
            return self._routes[base]
        raise AssertionError(f"the relay has no route for {rcpt}")

    # -- what passed ------------------------------------------------------------------------

    def sent_to(self, address: str) -> list[Delivery]:
        address = address.lower()
        with self._lock:
            return [d for d in self.log if d.rcpt == address]

    def sent_by(self, sender: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.log if d.mail_from.lower() == sender.lower()]


# -- header surgery on raw bytes (the body stays byte for byte) -----------------------------

_BREAK = re.compile(rb"\r?\n\r?\n")


def edit_headers(
    raw: bytes,
    *,
    drop: Iterable[str] = (),
    add: Iterable[tuple[str, str]] = (),
    charset: str = "utf-8",
) -> bytes:
    """Remove every field named in `drop` and append `add` (non-ASCII values RFC 2047-encoded
    in `charset`, e.g. "gb18030" as QQ Mail does).

    The body and every other header field are left untouched, byte for byte.
    """
    found = _BREAK.search(raw)
    head, rest = (raw[: found.start()], raw[found.start() :]) if found else (raw, b"\r\n\r\n")
    newline = b"\r\n" if b"\r\n" in head else b"\n"
    unwanted = {name.lower() for name in drop}
    fields: list[list[bytes]] = []
    for line in head.splitlines():
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    kept = [f for f in fields if f[0].split(b":", 1)[0].strip().lower().decode() not in unwanted]
    for name, value in add:
        if value.isascii():
            encoded = value
        else:
            encoded = encoded_words(value, charset, fold=newline.decode() + " ")
        kept.append([f"{name}: {encoded}".encode("ascii")])
    return newline.join(line for f in kept for line in f) + rest


def encoded_words(value: str, charset: str, fold: str = "\r\n ") -> str:
    """RFC 2047 B-encoding in `charset` as mail clients write it, one word per ~30 bytes of
    text (the email package would rename gb2312 to "eucgb2312_cn", which no client sends)."""
    words, chunk = [], ""
    for char in value:
        if len((chunk + char).encode(charset)) > 30:
            words.append(chunk)
            chunk = ""
        chunk += char
    words.append(chunk)
    encoded = [f"=?{charset}?B?{base64.b64encode(w.encode(charset)).decode()}?=" for w in words]
    return fold.join(encoded)


_MESSAGE_ID = re.compile(rb"(?im)^message-id:[ \t]*(<[^>\r\n]*>)")


def message_id(raw: bytes) -> str:
    """The Message-ID in a raw mail's header (it must have one)."""
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    found = _MESSAGE_ID.search(head)
    assert found, raw[:300]
    return found.group(1).decode()


def body(raw: bytes) -> bytes:
    """Everything after the header block."""
    found = _BREAK.search(raw)
    return raw[found.end() :] if found else b""


def stamped(delivery: Delivery) -> bytes:
    """The copy as a final delivery stores it: Return-Path and Delivered-To on top."""
    head = f"Return-Path: <{delivery.mail_from}>\r\nDelivered-To: {delivery.rcpt}\r\n"
    return head.encode("ascii") + delivery.raw


# -- routes: mailboxes ----------------------------------------------------------------------


def maildir_mailbox(path: Path) -> Route:
    """Final delivery into a Maildir (the one caseloop's [[mailboxes]] entry polls)."""

    def deliver(relay: Relay, delivery: Delivery) -> None:
        deliver_to_maildir(path, stamped(delivery))

    return deliver


# -- routes: robots -------------------------------------------------------------------------

AWAY_ZH = "您好，我正在休假，12月7日返回，期间无法及时回复邮件。如有急事请致电。"


def headerless_autoreply(
    address: str,
    now: Callable[[], datetime],
    *,
    threaded: bool = True,
    answer_reply_to: bool = False,
    subject: str | None = None,
) -> Route:
    """A responder that answers EVERY mail with "自动回复: <subject>" and no robot headers at all.

    Like many webmail and Exchange out-of-office setups in China: no Auto-Submitted, no
    Precedence, no X-Autoreply, sent from the person's own address (not the null sender).
    `threaded` sets In-Reply-To/References to the mail answered; `answer_reply_to` answers the
    Reply-To address (caseloop's per-case token) instead of the envelope sender; `subject` is a
    fixed subject instead ("休假通知": no case tag left).
    """

    def answer(relay: Relay, delivery: Delivery) -> None:
        original = delivery.message
        to = delivery.mail_from
        if answer_reply_to and original["Reply-To"]:
            to = parseaddr(str(original["Reply-To"]))[1]
        if not to:
            return  # even this robot has nobody to answer on a null sender
        reply = EmailMessage()
        reply["From"] = address
        reply["To"] = to
        reply["Subject"] = subject or f"自动回复: {original['Subject'] or ''}"
        reply["Date"] = format_datetime(now())
        reply["Message-ID"] = make_msgid(domain=address.partition("@")[2])
        if threaded and original["Message-ID"]:
            reply["In-Reply-To"] = str(original["Message-ID"])
            reply["References"] = str(original["Message-ID"])
        reply["X-Mailer"] = "Foxmail 7.2.25.228[cn]"
        reply.set_content(AWAY_ZH, charset="utf-8")
        relay.submit(address, to, reply.as_bytes(policy=policy.SMTP))

    return answer


def dsn_bounce(
    now: Callable[[], datetime],
    *,
    mta: str = "mx.example.net",
    status: str = "5.1.1",
    diagnostic: str = "550 5.1.1 <{rcpt}>: Recipient address rejected: User unknown",
) -> Route:
    """An MTA that accepted the mail and then failed to deliver it: a Postfix-style RFC 3464 DSN
    (multipart/report) from MAILER-DAEMON with the null sender, to the envelope sender."""

    def bounce(relay: Relay, delivery: Delivery) -> None:
        if not delivery.mail_from:
            return  # RFC 3464: never bounce a bounce
        original = delivery.raw
        headers = _BREAK.split(original, maxsplit=1)[0].decode("ascii", errors="replace")
        when = format_datetime(now())
        boundary = f"{make_msgid(domain=mta)[1:-1]}/{mta}"
        text = diagnostic.format(rcpt=delivery.rcpt)
        raw = (
            f"Date: {when}\r\n"
            f"From: MAILER-DAEMON@{mta} (Mail Delivery System)\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\n"
            f"To: {delivery.mail_from}\r\n"
            f"Auto-Submitted: auto-replied\r\n"
            f"MIME-Version: 1.0\r\n"
            f"Content-Type: multipart/report; report-type=delivery-status;\r\n"
            f'\tboundary="{boundary}"\r\n'
            f"Content-Transfer-Encoding: 8bit\r\n"
            f"Message-Id: {make_msgid(domain=mta)}\r\n"
            f"\r\n"
            f"This is a MIME-encapsulated message.\r\n\r\n"
            f"--{boundary}\r\n"
            f"Content-Description: Notification\r\n"
            f"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
            f"This is the mail system at host {mta}.\r\n\r\n"
            f"I'm sorry to have to inform you that your message could not\r\n"
            f"be delivered to one or more recipients. It's attached below.\r\n\r\n"
            f"                   The mail system\r\n\r\n"
            f"<{delivery.rcpt}>: host {mta}[192.0.2.25] said: {text} (in reply to RCPT TO\r\n"
            f"    command)\r\n\r\n"
            f"--{boundary}\r\n"
            f"Content-Description: Delivery report\r\n"
            f"Content-Type: message/delivery-status\r\n\r\n"
            f"Reporting-MTA: dns; {mta}\r\n"
            f"X-Postfix-Queue-ID: 4Hx3Cd7wxy\r\n"
            f"X-Postfix-Sender: rfc822; {delivery.mail_from}\r\n"
            f"Arrival-Date: {when}\r\n\r\n"
            f"Final-Recipient: rfc822; {delivery.rcpt}\r\n"
            f"Original-Recipient: rfc822;{delivery.rcpt}\r\n"
            f"Action: failed\r\n"
            f"Status: {status}\r\n"
            f"Remote-MTA: dns; {mta}\r\n"
            f"Diagnostic-Code: smtp; {text}\r\n\r\n"
            f"--{boundary}\r\n"
            f"Content-Description: Undelivered Message Headers\r\n"
            f"Content-Type: text/rfc822-headers\r\n\r\n"
            f"{headers}\r\n\r\n"
            f"--{boundary}--\r\n"
        ).encode()
        relay.submit("", delivery.mail_from, raw)

    return bounce
