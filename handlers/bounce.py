"""Delivery failure reports: which mail of ours failed, for whom, and why.

RFC 3464 reports (multipart/report; report-type=delivery-status: Postfix, Exim, Exchange,
Gmail) are read from their message/delivery-status part: Final-Recipient, Action, Status and
Diagnostic-Code. Everything else, and a report whose status part cannot be read, goes to
flufl.bounce (GNU Mailman's bounce detectors: Exim's X-Failed-Recipients, qmail, Exchange's
old NDR text, GroupWise, Yahoo and more), then to the wording Chinese servers use ("收件人：",
"退信原因："), which flufl.bounce does not know.

Our own mail is found by its Message-ID: in the enclosed original (message/rfc822 or
text/rfc822-headers, which ParsedMessage keeps whole as attachments), in the report's
X-Original-Message-ID, in In-Reply-To/References, or on a "Message-ID:" line of the text.

Only mail that looks like a report is looked at closely, because this runs on every message:
a report content type, X-Failed-Recipients, or a bounce subject ("Undeliverable:", "退信")
from a mailer daemon or carrying the original. A consumer whose subject says "Undeliverable
parcel", or who forwards a bounce to us, is a person, not a bounce.
"""

from __future__ import annotations

import email
import re
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

from flufl.bounce import all_failures
from sqlalchemy import update

from daemon.store import writes
from daemon.store.models import OutboxMessage, Ticket
from handlers.context import Bounce, Context
from handlers.message import Attachment, ParsedMessage

_DSN_TYPES = {"message/delivery-status", "message/global-delivery-status"}
_ORIGINAL_TYPES = {
    "message/rfc822",
    "message/global",
    "text/rfc822-headers",
    "message/rfc822-headers",
    "message/global-headers",
}
_REPORT_TYPE = re.compile(r"report-type\s*=\s*\"?([\w.-]+)", re.I)
_ROBOT_LOCALPART = re.compile(
    r"(?:mailer[-_]?daemon|mail[-_]?daemon|postmaster|microsoftexchange[0-9a-f]*)", re.I
)
_BOUNCE_SUBJECT = re.compile(
    r"\s*(?:"
    r"(?:undeliver(?:ed|able)|non[- ]?deliver(?:y|able)|returned mail|failure notice"
    r"|mail delivery (?:failed|failure|system|subsystem)|delivery (?:status notification|failure"
    r"|has failed|notification|incomplete)|message (?:not delivered|delivery failure|undeliverable"
    r"|could not be delivered)|could not send message|delayed mail|warning: message"
    r"|mail system error|returned to sender)"
    r"|.{0,60}?(?:退信|邮件被退回|邮件退回|投递失败|递送失败|发送失败|未能送达|无法送达|无法投递"
    r"|投递状态通知|退件))",
    re.I,
)
# An addr-spec as servers print it: IDN labels, but an ASCII top-level domain, so that Chinese
# text written right after an address ("gone@example.cn请检查") is not taken for part of it.
_LOCAL_PART = r"[^\s<>()\[\]\",;:@　，、：；（）]+"
_DOMAIN_LABEL = r"[A-Za-z0-9\-\u0080-\uffff]+"
_ADDRESS = rf"{_LOCAL_PART}@{_DOMAIN_LABEL}(?:\.{_DOMAIN_LABEL})*\.[A-Za-z][A-Za-z0-9-]*"
_RECIPIENT_IN_TEXT = (
    # "收件人：li.na@qq.com", "Recipient address: x@y", "Intended recipient: x@y"
    re.compile(
        r"(?:收件人(?:地址)?|收信人|原收件人|失败的收件人|(?:failed |final-|original |intended )?"
        rf"recipient(?:s| address)?)\s*[:：]\s*(?:rfc822\s*;\s*)?<?({_ADDRESS})",
        re.I,
    ),
    # "Your message to x@y couldn't be delivered", "无法发送到 x@y"
    re.compile(
        r"(?:message to|wasn't delivered to|could not be delivered to|无法发送到|无法投递到|发送到"
        rf"|投递到)\s*<?({_ADDRESS})",
        re.I,
    ),
    re.compile(rf"^\s*<({_ADDRESS})>\s*[:：(]", re.M),  # Postfix: "<x@y>: host ... said: 550"
)
_REASON_LABEL = re.compile(
    r"(?:退信原因|失败原因|错误原因|退回原因)\s*[:：]?[ \t]*\n?[ \t]*(\S[^\n]*)"
)
_ENHANCED_CODE_LINE = re.compile(r"^[^\n]*\b[245]\.\d{1,3}\.\d{1,3}\b[^\n]*", re.M)
_REPLY_CODE_LINE = re.compile(r"^[^\n]*\b(?:5[0-5]\d|4[2-5]\d)[ -][^\n]*", re.M)
_DELAY = re.compile(
    r"delay|still being retried|will be retried|will retry|warning only|not yet been delivered"
    r"|延迟|延时|暂时|正在重试|将继续尝试",
    re.I,
)
_BODY_MESSAGE_ID = re.compile(
    r"^[^\n:：]{0,12}?(?:x-)?(?:original-)?message-id[ \t]*[:：][ \t]*(<[^<>\s]+>)", re.I | re.M
)
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_REASON_MAX = 200


def parse_bounce(msg: ParsedMessage) -> Bounce | None:
    """The delivery failure this message reports, or None if it is not a failure report."""
    report = _report_type(msg)
    if report is not None and report != "delivery-status":
        return None  # a read receipt (MDN) or an abuse report: automatic, but not a bounce
    reports = [a for a in msg.attachments if a.content_type in _DSN_TYPES]
    originals = [a for a in msg.attachments if a.content_type in _ORIGINAL_TYPES]
    robot = _robot_sender(msg)
    subject = _BOUNCE_SUBJECT.match(msg.subject) is not None
    if not (
        report
        or reports
        or "x-failed-recipients" in msg.headers
        or (subject and (robot or originals))
    ):
        return None

    found = _from_delivery_status(reports, msg.text) or _from_flufl(msg) or _from_text(msg)
    permanent, recipients, reason = found or (not _delayed(msg), (), "")
    if permanent is None:  # a report that only says "delivered" or "relayed"
        return None
    original_id, original_to = _original(originals)
    if not recipients and len(original_to) == 1:
        recipients = original_to  # our mail goes to one consumer: the one it failed for
    original_id = original_id or _report_original_id(reports) or _id_from_headers(msg)
    if original_id is None:
        found_id = _BODY_MESSAGE_ID.search(msg.text)
        original_id = found_id[1] if found_id else None
    return Bounce(
        permanent=permanent,
        recipients=recipients,
        original_message_id=original_id,
        reason=_one_line(reason or _reason_in_text(msg.text) or msg.subject or "bounce"),
    )


# --- is it a report at all ------------------------------------------------------------------


def _report_type(msg: ParsedMessage) -> str | None:
    """The report-type of a multipart/report ("delivery-status", ...); None for other mail."""
    content_type = msg.headers.get("content-type", "")
    if not content_type.lower().lstrip().startswith("multipart/report"):
        return None
    found = _REPORT_TYPE.search(content_type)
    return found[1].lower() if found else "delivery-status"


def _robot_sender(msg: ParsedMessage) -> bool:
    local = msg.from_address.partition("@")[0]
    return msg.return_path == "" or _ROBOT_LOCALPART.fullmatch(local) is not None


# --- RFC 3464 -------------------------------------------------------------------------------

_Found = tuple[bool | None, tuple[str, ...], str]  # (permanent, recipients, reason)


def _fields(payload: bytes) -> list[dict[str, str]]:
    """The header blocks of a message/delivery-status part, names lower-cased."""
    text = payload.decode("utf-8", "replace").replace("\r\n", "\n")
    blocks: list[dict[str, str]] = []
    for chunk in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        name = ""
        for line in chunk.split("\n"):
            if line[:1] in (" ", "\t") and name:
                fields[name] += " " + line.strip()
            elif ":" in line:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                fields.setdefault(name, value.strip())
        if fields:
            blocks.append(fields)
    return blocks


def _from_delivery_status(reports: list[Attachment], text: str) -> _Found | None:
    """What the per-recipient blocks say; None if there are none to read."""
    failed: list[tuple[str, str]] = []  # (address, reason)
    delayed: list[tuple[str, str]] = []
    seen = False
    for part in reports:
        for block in _fields(part.payload):
            address = _typed_address(
                block.get("final-recipient") or block.get("original-recipient")
            )
            if address is None:
                continue
            seen = True
            status = block.get("status", "").strip()
            action = block.get("action", "").lower() or {"5": "failed", "4": "delayed"}.get(
                status[:1], ""
            )
            diagnostic = block.get("diagnostic-code", "")
            reason = diagnostic.split(";", 1)[-1].strip() if diagnostic else ""
            reason = reason or _reason_in_text(text) or (f"status {status}" if status else "")
            if action.startswith(("fail", "error")):  # opensmtpd writes "error"
                failed.append((address, reason))
            elif action.startswith("delay"):
                delayed.append((address, reason))
    if not seen:
        return None
    for permanent, listed in ((True, failed), (False, delayed)):
        if listed:
            return permanent, _unique([a for a, _ in listed]), listed[0][1]
    return None, (), ""  # only "delivered", "relayed" or "expanded": a success report


def _typed_address(value: str | None) -> str | None:
    """The address in "rfc822; x@y" (also "utf-8; ..." and bare or bracketed forms)."""
    if not value:
        return None
    address = value.split(";", 1)[-1].strip().strip("<>").strip()
    address = re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m[1], 16)), address)  # xtext
    return address.lower() if "@" in address else None


def _report_original_id(reports: list[Attachment]) -> str | None:
    for part in reports:
        for block in _fields(part.payload):
            value = block.get("x-original-message-id")
            found = _MESSAGE_ID.search(value or "")
            if found:
                return found[0]
    return None


# --- everything else ------------------------------------------------------------------------


def _from_flufl(msg: ParsedMessage) -> _Found | None:
    """Mailman's detectors, on the raw message (they want an email.message.Message)."""
    try:
        temporary, permanent = all_failures(email.message_from_bytes(msg.raw, policy=compat32))
    except Exception:  # a detector tripping over odd bytes must not stop the queue
        return None
    ours = _addressees(msg)
    failed = _clean_addresses(permanent, ours)
    if failed:
        return True, failed, ""
    later = _clean_addresses(temporary, ours)
    if later:
        return False, later, ""
    return None


def _from_text(msg: ParsedMessage) -> _Found | None:
    """The wording of Chinese servers' reports, and sentences naming the failed address."""
    ours = _addressees(msg)
    found: list[str] = []
    for pattern in _RECIPIENT_IN_TEXT:
        found.extend(m[1].lower() for m in pattern.finditer(msg.text))
    recipients = tuple(a for a in _unique(found) if a not in ours)
    if not recipients:
        return None
    return not _delayed(msg), recipients, ""


def _clean_addresses(found: frozenset[bytes], ours: set[str]) -> tuple[str, ...]:
    addresses = (raw.decode("ascii", "replace").strip().lower() for raw in found)
    return tuple(sorted(a for a in addresses if "@" in a and a not in ours))


def _addressees(msg: ParsedMessage) -> set[str]:
    """The report's own sender and addressees (us): never the address that failed."""
    return {a.lower() for a in (msg.from_address, *msg.to, *msg.cc)}


def _delayed(msg: ParsedMessage) -> bool:
    if _DELAY.search(msg.subject):
        return True
    text = msg.text[:4000]
    return _DELAY.search(text) is not None and not re.search(r"\b5\d\d\b|\b5\.\d", text)


def _reason_in_text(text: str) -> str:
    for pattern in (_REASON_LABEL, _ENHANCED_CODE_LINE, _REPLY_CODE_LINE):
        found = pattern.search(text)
        if found:
            return found[1] if pattern.groups else found[0]
    return ""


# --- our original ---------------------------------------------------------------------------


def _original(originals: list[Attachment]) -> tuple[str | None, tuple[str, ...]]:
    """(Message-ID, To addresses) of the enclosed original message or its headers."""
    for part in originals:
        try:
            headers = BytesHeaderParser(policy=compat32).parsebytes(part.payload)
        except Exception:  # a mangled enclosure is only a missed hint
            continue
        found = _MESSAGE_ID.search(str(headers.get("message-id", "")))
        to = tuple(
            address.lower()
            for _, address in getaddresses([str(v) for v in headers.get_all("to", [])])
            if "@" in address
        )
        if found:
            return found[0], to
    return None, ()


def _id_from_headers(msg: ParsedMessage) -> str | None:
    if msg.in_reply_to:
        return msg.in_reply_to[0]
    if msg.references:
        return msg.references[-1]
    return None


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _REASON_MAX else line[: _REASON_MAX - 1] + "…"


class RecordBounce:
    name = "record-bounce"
    description = "a bounce marks the outgoing mail it refers to and lands on that case"

    def process(self, ctx: Context) -> None:
        bounce = ctx.prep.bounce
        if bounce is None or bounce.original_message_id is None:
            return
        row = writes.outbox_of_message(ctx.session, bounce.original_message_id)
        if row is None:
            return  # not ours: threading may still place it, else it is ignored
        outbox_id, ticket_id, recipient = row
        if bounce.recipients and recipient not in bounce.recipients:
            return
        case = ctx.session.get(Ticket, ticket_id) if ticket_id is not None else None
        if case is not None and case.erased_at is not None:  # handlers/privacy.py
            ctx.stop("ignored", f"a bounce about {case.number}, whose personal data was erased")
            return
        if bounce.permanent:
            ctx.session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == outbox_id)
                .values(status="bounced", last_error=bounce.reason)
            )
        if case is not None:
            ctx.ticket = case  # recorded there, for staff only
