"""Templates -> outbox rows: every mail we send is rendered here and queued in the transaction."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.header import Header
from email.utils import format_datetime, formataddr, make_msgid
from pathlib import Path
from typing import Any

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.clock import Duration, in_window
from daemon.config import PRIORITIES, Config
from daemon.resources import shipped_dir
from daemon.store import writes
from daemon.store.models import Ticket, TimelineEntry
from handlers.context import RenderedMail, Renderer
from handlers.rejection import CODES, consumer_reason
from handlers.threading import reply_address

_UNIT_WORDS = {
    "en": {
        "seconds": "seconds",
        "minutes": "minutes",
        "hours": "hours",
        "days": "days",
        "weeks": "weeks",
        "years": "years",
    },
    "zh-CN": {
        "seconds": "秒",
        "minutes": "分钟",
        "hours": "小时",
        "days": "天",
        "weeks": "周",
        "years": "年",
    },
}


def describe_duration(duration: Duration, language: str) -> str:
    """ "3 working days" / "3个工作日": how a deadline reads to a consumer."""
    amount = int(duration.amount) if duration.amount == int(duration.amount) else duration.amount
    if language == "zh-CN":
        if duration.working:
            return f"{amount}个工作日" if duration.unit == "days" else f"{amount}个工作小时"
        return f"{amount}{_UNIT_WORDS['zh-CN'][duration.unit]}"
    unit = _UNIT_WORDS["en"][duration.unit]
    if amount == 1:
        unit = unit.rstrip("s")
    return f"{amount} {'working ' if duration.working else ''}{unit}"


class Templates:
    """Jinja2 environments for the mail templates, with the operator's override folder first."""

    def __init__(self, config: Config) -> None:
        self.config = config
        roots: list[Path] = []
        if config.templates_override_dir is not None:
            roots.append(config.templates_override_dir)
        roots.append(shipped_dir("templates"))
        loader = jinja2.FileSystemLoader([str(r) for r in roots])
        common: dict[str, Any] = {
            "loader": loader,
            "undefined": jinja2.StrictUndefined,
            "keep_trailing_newline": True,
            "auto_reload": False,  # templates are read once; a changed override needs a restart
        }
        self._text = jinja2.Environment(autoescape=False, **common)  # noqa: S701 plain text
        self._html = jinja2.Environment(autoescape=True, **common)
        self._senders: dict[str, str] = {}
        self._loaded: dict[tuple[object, str], jinja2.Template] = {}
        for env in (self._text, self._html):
            env.filters["duration"] = describe_duration
            env.filters["localtime"] = self._localtime
            env.filters["rejection_reason"] = consumer_reason
            # what staff may write after #reject, #priority and #category (_how_to_act.txt)
            env.globals["rejection_codes"] = CODES
            env.globals["priorities"] = PRIORITIES
            env.globals["categories"] = config.categories

    def sender(self, language: str) -> str:
        """Our From: the display name from <language>/sender.txt (an operator may override it)
        and the support address, encoded for the header once per language."""
        found = self._senders.get(language)
        if found is None:
            source = self._text.get_template(f"{language}/sender.txt").render(config=self.config)
            address = (header_safe(source, 100), self.config.support_address)
            found = self._senders[language] = formataddr(address, "utf-8")
        return found

    def _template(self, env: jinja2.Environment, name: str) -> jinja2.Template:
        """A template looked up once (they are read once anyway: auto_reload is off)."""
        found = self._loaded.get((env.autoescape, name))
        if found is None:
            found = self._loaded[env.autoescape, name] = env.get_template(name)
        return found

    def _localtime(self, value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
        return value.astimezone(self.config.timezone).strftime(fmt) if value else ""

    def render(self, kind: str, language: str, **context: Any) -> RenderedMail:
        """Render <language>/<kind>.txt (first line "Subject: ...") and <kind>.html."""
        context.setdefault("config", self.config)
        context.setdefault("lang", language)
        if isinstance(context.get("message"), str):  # our templates greet the consumer already
            context["message"] = without_greeting(context["message"])
        text = self._template(self._text, f"{language}/{kind}.txt").render(**context)
        first, _, body = text.partition("\n")
        if not first.startswith("Subject:"):
            raise ValueError(f"template {language}/{kind}.txt must start with 'Subject: '")
        html = self._template(self._html, f"{language}/{kind}.html").render(**context)
        return RenderedMail(
            subject=first[len("Subject:") :].strip(), text=body.lstrip("\n"), html=html
        )


_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f]+")


# A staff member's own salutation on the first line of their text ("Dear Daniel,", "李先生，您好！")
_GREETING = re.compile(
    r"\s*(?:(?:dear|hi|hello|hey)\b[^\n]{0,60}|(?:尊敬的|亲爱的)?[^\n]{0,20}(?:您好|你好))"
    r"[,，:：!！.。]?[ \t]*(?:\n|$)",
    re.IGNORECASE,
)


def without_greeting(text: str) -> str:
    """The text without its own first-line greeting (the template's greets by full name)."""
    found = _GREETING.match(text)
    return text[found.end() :].lstrip("\n") if found and text[found.end() :].strip() else text


def header_safe(text: str, limit: int = 200) -> str:
    """Consumer-provided text fit for a header: no CR/LF or controls (no header injection)."""
    return _HEADER_UNSAFE.sub(" ", text).strip()[:limit]


def our_domain(config: Config) -> str:
    return config.support_address.rpartition("@")[2] or "localhost"


def new_message_id(config: Config) -> str:
    return make_msgid(domain=our_domain(config))


def summary_headers(
    templates: Renderer, config: Config, language: str, recipient: str, subject: str, now: datetime
) -> dict[str, str | None]:
    """Headers of a mail about many cases (a digest, folded assignments): no thread, no tag."""
    return {
        "From": templates.sender(language),
        "To": header_safe(recipient, 320),
        "Subject": header_safe(subject, 300),
        "Date": format_datetime(now.astimezone(config.timezone)),
        "Message-ID": new_message_id(config),
        "Auto-Submitted": "auto-generated",
        "X-Auto-Response-Suppress": "All",
    }


def thread_ids(session: Session, ticket: Ticket) -> list[str]:
    """The consumer's conversation's Message-IDs, oldest first, for References (bounded like
    MUAs do); staff and third-party mail is not part of it."""
    session.flush()
    ids = (
        session.connection()
        .execute(
            select(TimelineEntry.message_id)
            .where(
                TimelineEntry.ticket_id == ticket.id,
                TimelineEntry.message_id.is_not(None),
                TimelineEntry.internal.is_(False),  # staff mail stays out of the consumer's thread
            )
            .order_by(TimelineEntry.id)
        )
        .scalars()
        .all()
    )
    found = [i for i in ids if i]
    return found[:1] + found[1:][-9:] if len(found) > 10 else found


def rate_limited(session: Session, config: Config, recipient: str, now: datetime) -> bool:
    """SPEC §6: automatic mail to one address is capped per hour, the last line against loops."""
    recent = writes.automatic_mail_count(session, recipient.lower(), now - timedelta(hours=1))
    return recent >= config.intake.auto_mail_per_address_per_hour


def queue_mail(
    session: Session,
    config: Config,
    templates: Renderer,
    *,
    ticket: Ticket,
    kind: str,
    intent: str,
    now: datetime,
    context: dict[str, Any],
    in_reply_to: str | None = None,
    automatic: str | None = "auto-replied",
    recipient: str | None = None,
    references: list[str] | None = None,
    internal: bool = False,
    reply_to: str | None = None,
    consumer_hours: bool = False,
    language: str | None = None,
) -> str | None:
    """Render one mail about a case and queue it, once per intent, with its timeline entry.

    `consumer_hours`: scheduled mail to the consumer (a survey, a case closed for silence)
    goes out within [delivery] consumer_hours only: queued for the window's next start, and
    held back by the sender whenever it would go out of the window (a retry, a late sweep).

    `automatic` is the RFC 3834 Auto-Submitted value: "auto-replied" for an answer to the
    consumer's mail, "auto-generated" for scheduled mail, None for a person's (staff) mail.
    Returns its Message-ID, or None when the intent was already queued or the recipient's
    hourly cap is reached. `references` is the conversation when the caller already knows it:
    a case opened in this very transaction, which can have queued nothing yet (the outbox's
    unique intent still guards it). Otherwise it is read from the case's timeline.

    Mail to staff or supervisors about a case passes `recipient`, `internal=True` (it is
    written in the recipient's language, its timeline entry is for staff only) and, for staff
    who may act by reply, their own `reply_to` address (handlers/threading.py
    staff_reply_address). Mail to the consumer is in the case's language.
    """
    to = (recipient or ticket.complainant_email).strip()
    if references is None and writes.intent_taken(session, intent):
        return None
    # The cap guards consumers' mailboxes against loops; mail to our own staff is not capped.
    if automatic is not None and not internal and rate_limited(session, config, to, now):
        session.add(
            TimelineEntry(
                ticket_id=ticket.id,
                at=now,
                kind="note",
                actor="caseloop",
                internal=True,
                text=f"automatic {kind} mail to {to} not sent: hourly limit "
                f"({config.intake.auto_mail_per_address_per_hour}) reached",
                data={},
            )
        )
        return None
    if language is None:  # else the caller's: a report to the regulator is in Chinese
        language = config.language_of(to) if internal else ticket.language
    mail = templates.render(kind, language, ticket=ticket, **context)
    subject = header_safe(f"[{ticket.number}] {mail.subject}", 300)
    message_id = new_message_id(config)
    references = list(references) if references is not None else thread_ids(session, ticket)
    if in_reply_to and in_reply_to not in references:
        references.append(in_reply_to)
    parent = in_reply_to or (references[-1] if references else None)

    headers = {
        "From": templates.sender(language),
        "To": header_safe(to, 320),
        "Subject": subject,
        "Date": format_datetime(now.astimezone(config.timezone)),
        "Message-ID": message_id,
        "In-Reply-To": parent,
        "References": " ".join(references) if references else None,
        "Auto-Submitted": automatic,
        "Reply-To": reply_to or reply_address(config, ticket),
        "X-Auto-Response-Suppress": "All",
        "X-Caseloop-Ticket": ticket.number,
    }
    raw = build_mime(headers, mail)

    writes.queue_outbox(
        session,
        ticket_id=ticket.id,
        kind=kind,
        intent=intent,
        status="queued",
        recipient=to.lower(),
        message_id=message_id,
        subject=subject,
        raw=raw,
        automatic=automatic is not None,
        created_at=now,
        next_attempt_at=in_window(now, config.delivery.consumer_hours, config.timezone)
        if consumer_hours
        else now,
        consumer_hours=consumer_hours,
        attempts=0,
        sent_at=None,
        last_error=None,
    )
    writes.add_entry(
        session,
        ticket_id=ticket.id,
        at=now,
        kind="message_out",
        actor=config.support_address,
        direction="out",
        message_id=message_id,
        subject=subject,
        text=mail.text,
        internal=internal,
        raw_sha256=hashlib.sha256(raw).hexdigest(),
        data={"mail_kind": kind},
    )
    return message_id


def encoded_words(value: str) -> str:
    """RFC 2047 base64 encoded-words, each at most 75 characters and never splitting a
    character, folded onto continuation lines (what email.header does, at a tenth the cost)."""
    data = value.encode("utf-8")
    words: list[bytes] = []
    start = 0
    while start < len(data):
        end = start + 39  # 39 bytes: a 64-character word, a 78-character first line
        while end < len(data) and data[end] & 0xC0 == 0x80:  # inside a character: back off
            end -= 1
        words.append(data[start:end])
        start = end
    encoded = (base64.b64encode(w).decode("ascii") for w in words or [b""])
    return "\r\n ".join(f"=?utf-8?b?{e}?=" for e in encoded)


@dataclass(frozen=True)
class InlinePart:
    """A file the HTML part shows by Content-ID ("cid:..."), such as the digest's chart."""

    data: bytes
    content_type: str  # "image/png"
    cid: str  # without the angle brackets
    filename: str


def build_mime(
    headers: dict[str, str | None], mail: RenderedMail, inline: Sequence[InlinePart] = ()
) -> bytes:
    """multipart/alternative (text + HTML, UTF-8, base64) with CRLF line ends, as on the wire;
    with `inline` parts the HTML and they make a multipart/related.

    Assembled directly: the email package's generator costs more than the rest of an
    acknowledgement together. Header values are already free of CR/LF (header_safe); non-ASCII
    values become RFC 2047 encoded-words, long ASCII ones are folded by email.header.
    """
    lines = []
    for name, value in headers.items():
        if value is None:
            continue
        if not value.isascii() or (name == "Subject" and "=?" in value):
            # a subject quoting "=?utf-8?b?...?=" is encoded whole, or readers would decode it
            value = encoded_words(value)
        elif len(name) + len(value) > 76:
            value = Header(value, "us-ascii", header_name=name).encode(linesep="\r\n")
        lines.append(f"{name}: {value}")
    lines.append("MIME-Version: 1.0")
    html = _leaf('text/html; charset="utf-8"', mail.html.encode("utf-8"))
    if inline:
        files = [
            _leaf(
                part.content_type,
                part.data,
                f"Content-ID: <{part.cid}>",
                f'Content-Disposition: inline; filename="{part.filename}"',
            )
            for part in inline
        ]
        html = _multipart("related", [html, *files])
    lines += _multipart(
        "alternative", [_leaf('text/plain; charset="utf-8"', mail.text.encode("utf-8")), html]
    )
    lines.append("")
    return "\r\n".join(lines).encode("ascii")


def _leaf(content_type: str, body: bytes, *headers: str) -> list[str]:
    """One base64 part's lines: its headers, a blank line, the body in 76-character lines."""
    encoded = base64.encodebytes(body).decode("ascii")
    return [
        f"Content-Type: {content_type}",
        "Content-Transfer-Encoding: base64",
        *headers,
        "",
        encoded.rstrip("\n").replace("\n", "\r\n"),
    ]


def _multipart(subtype: str, parts: list[list[str]]) -> list[str]:
    """A multipart's lines: its Content-Type with a fresh boundary, then each part after it."""
    boundary = f"=_caseloop_{secrets.token_hex(12)}"
    lines = [f'Content-Type: multipart/{subtype}; boundary="{boundary}"', ""]
    for part in parts:
        lines.append(f"--{boundary}")
        lines += part
    lines.append(f"--{boundary}--")
    return lines
