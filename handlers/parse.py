"""bytes -> ParsedMessage: charsets, text from HTML, attachments; and the Parse step.

The standard library's ``email`` parser (compat32 policy) splits a message into headers and
MIME parts: it is fast and keeps the original bytes of every header and part. Text is decoded
here rather than by a parser, because mail lies about charsets (LESSONS 8): Chinese clients
label GBK and GB18030 text as GB2312, Big5 mail carries cp950 and HKSCS characters, and some
mail declares no charset or a wrong one. mail-parser splits address headers, where it is
stricter than the standard library about broken and spoofed mailbox lists.

Odd bytes never raise. Only a message that cannot become a ticket at all (no headers, no
usable sender) raises ParseError, so the caller can quarantine the raw bytes and go on with
the next message (LESSONS 3).
"""

from __future__ import annotations

import email
import hashlib
import mimetypes
import re
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import Message
from email.policy import compat32
from email.utils import parsedate_to_datetime
from types import MappingProxyType

import inscriptis
from mailparser.utils import get_addresses

from daemon.config import Config
from handlers.charsets import Decoder, clean_text
from handlers.context import BlobWriter, Prepared, StoredAttachment
from handlers.message import Attachment, ParsedMessage
from handlers.quotes import strip_quotes


class ParseError(Exception):
    """The bytes cannot become a ticket; str(exc) says why in a few words."""


def parse_message(raw: bytes) -> ParsedMessage:
    """Parse one raw message; raises only ParseError."""
    if not raw or not raw.strip():
        raise ParseError("empty input")
    try:
        return _parse(raw)
    except ParseError:
        raise
    except Exception as exc:  # a parser bug must not block the queue either
        raise ParseError(f"unparseable message ({type(exc).__name__})") from exc


# --- addresses, ids, dates ------------------------------------------------------------------

_ADDR_SPEC = re.compile(r"[^\s<>()\[\]\",;:@]+@[^\s<>()\[\]\",;:@]+")
_ANGLE_ADDR = re.compile(r"<\s*([^<>\s][^<>]*)>")
_MSG_ID = re.compile(r"<([^<>]+)>")
MAX_RAW_HEADER = 64 * 1024  # characters of one header value read; the raw mail keeps the rest
MAX_SUBJECT = 1000  # characters of a subject kept on the case
MAX_REFERENCES = 100  # ids of References (and In-Reply-To) looked up
_BARE_ADDRESS = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# A display name mail-parser reads as written (a quoted string without escapes, one encoded
# word, or plain words), then such an address in angle brackets: what it would return.
_NAMED_ADDRESS = re.compile(
    r'(?:"([^"\\\r\n]*)"|(=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=|[A-Za-z0-9]+(?: [A-Za-z0-9]+)*))[ \t]*'
    r"<([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)>"
)


def _addresses(values: list[str], decoder: Decoder, where: str) -> list[tuple[str, str]]:
    """(display name still RFC 2047-encoded, address) pairs from every occurrence of a header."""
    pairs: list[tuple[str, str]] = []
    for raw in values:
        value = decoder.unfold(raw, where).strip()
        if _BARE_ADDRESS.fullmatch(value):  # the common "a@b.c": no parser needed
            pairs.append(("", value))
        elif named := _NAMED_ADDRESS.fullmatch(value):  # and "Name" <a@b.c>, Name <a@b.c>
            pairs.append((named[1] if named[1] is not None else named[2], named[3]))
        elif value:
            pairs.extend((name, addr.strip()) for name, addr in get_addresses(value) if addr)
    return pairs


def _mailboxes(values: list[str], decoder: Decoder, where: str) -> tuple[str, ...]:
    """Just the addresses, in order, each once."""
    return tuple(dict.fromkeys(address for _, address in _addresses(values, decoder, where)))


# Where else a sender can be found when From cannot be answered: what Zammad and MUAs accept.
_SENDER_FALLBACKS = ("reply-to", "sender")


def _sender(headers: dict[str, list[str]], decoder: Decoder) -> tuple[str, str, str]:
    """(display name, address, header) of whoever can be answered: From, else a usable second
    From, else Reply-To, else Sender; ParseError with From's problem when none is usable."""
    froms = headers.get("from", [])
    first: ParseError | None = None
    for index, value in enumerate(froms[:3]):
        try:
            name, address = _one_sender(value, decoder, "from header")
        except ParseError as exc:
            first = first or exc
            continue
        if index:
            decoder.note(f"From header {index + 1} used: the first has no usable address")
        elif len(froms) > 1:
            decoder.note(f"{len(froms)} From headers: the first used")
        return name, address, "from"
    for header in _SENDER_FALLBACKS:
        for value in headers.get(header, [])[:1]:
            try:
                name, address = _one_sender(value, decoder, f"{header} header")
            except ParseError:
                continue
            problem = "no From" if first is None else f"From unusable ({first})"
            decoder.note(f"{problem}: sender taken from {header.title()}")
            return name, address, header
    raise first or ParseError("no usable sender (From missing)")


def _one_sender(value: str, decoder: Decoder, where: str) -> tuple[str, str]:
    """(display name, address) of one From-like header; ParseError when nobody can be answered."""
    pairs = _addresses([value], decoder, where)
    if pairs:
        name, address = pairs[0]
    else:
        value = decoder.unfold(value, where)
        candidates = list(dict.fromkeys(_ADDR_SPEC.findall(value)))
        if len(candidates) > 1:
            raise ParseError("no usable sender (From is ambiguous)")
        if not candidates:
            if _ANGLE_ADDR.search(value):
                raise ParseError("no usable sender (From address has no @)")
            raise ParseError("no usable sender (From has no address)")
        name, address = "", candidates[0]
        decoder.note("From address recovered from a malformed header")
    if "@" not in address:
        raise ParseError("no usable sender (From address has no @)")
    return clean_text(decoder.words(name, where).strip()), address


def _message_ids(value: str | None) -> tuple[str, ...]:
    """Message ids "<...>" in order, without duplicates; bare ids with @ are bracketed."""
    if not value:
        return ()
    ids = ["".join(found.split()) for found in _MSG_ID.findall(value)]
    if not ids:
        ids = [token.strip("<>") for token in value.split() if "@" in token]
    return tuple(dict.fromkeys(f"<{i}>" for i in ids if i))


def _references(value: str | None, decoder: Decoder) -> tuple[str, ...]:
    """The References ids, at most MAX_REFERENCES: the first (the thread's root) and the
    latest, as RFC 5322 3.6.4 suggests trimming them (a header of 400k ids threads no better)."""
    ids = _message_ids(value)
    if len(ids) <= MAX_REFERENCES:
        return ids
    decoder.note(f"references header: {len(ids)} ids, the first and last {MAX_REFERENCES - 1} kept")
    return (ids[0], *ids[-(MAX_REFERENCES - 1) :])


def _header(name: str, raw: str, decoder: Decoder) -> str:
    """One header's value, decoded, its size bounded before and after decoding: a subject of a
    million encoded words or a References of 400k ids costs what its first (or, for References,
    last) 64 KiB cost; a subject is cut to MAX_SUBJECT characters. The raw mail keeps it all."""
    if len(raw) > MAX_RAW_HEADER:
        if name == "references":  # the latest ids are the ones that thread
            cut = raw.find(" ", len(raw) - MAX_RAW_HEADER)
            raw = raw[cut if cut >= 0 else len(raw) - MAX_RAW_HEADER :]
        else:
            cut = raw.rfind(" ", 0, MAX_RAW_HEADER)
            raw = raw[: cut if cut > MAX_RAW_HEADER // 2 else MAX_RAW_HEADER]
        decoder.note(f"{name} header over {MAX_RAW_HEADER // 1024} KiB: only part of it read")
    value = decoder.header(raw, f"{name} header")
    if name == "subject" and len(value) > MAX_SUBJECT:
        decoder.note(f"subject cut to {MAX_SUBJECT} of its {len(value)} characters")
        value = value[:MAX_SUBJECT].rstrip()
    return value


def _message_id(value: str | None) -> str | None:
    if not value or not value.strip():
        return None
    ids = _message_ids(value)
    if ids:
        return ids[0]
    token = value.split()[0].strip("<>")
    return f"<{token}>" if token else None


def _return_path(value: str | None) -> str | None:
    if value is None:
        return None
    found = _MSG_ID.search(value)
    if found:
        return found[1].strip()
    return "" if value.strip() in ("", "<>") else value.split()[0]


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
        if parsed.tzinfo is None:  # "-0000" or no zone: RFC 5322 says treat as UTC
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


# --- MIME parts -----------------------------------------------------------------------------

_MAX_DEPTH = 30
_MIME_TYPES = mimetypes.MimeTypes()  # the built-in table only: same names on every host
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)
_UNSAFE_IN_NAMES = re.compile(r'[<>:"|?*]')
_SCRIPT_STYLE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")


def _leaves(part: Message, decoder: Decoder, depth: int = 0) -> Iterator[Message]:
    """The parts that hold content; message/* parts stay whole, as one attachment."""
    payload = part.get_payload()
    if part.get_content_maintype() == "multipart" and isinstance(payload, list):
        if depth >= _MAX_DEPTH:
            decoder.note(f"MIME nesting deeper than {_MAX_DEPTH} levels, inner parts skipped")
            return
        for sub in payload:
            if isinstance(sub, Message):
                yield from _leaves(sub, decoder, depth + 1)
    else:
        yield part


def _filename(part: Message, decoder: Decoder) -> str | None:
    """The attachment name as the sender meant it (RFC 2231 / RFC 2047 / raw 8-bit)."""
    raw = {name.lower(): value for name, value in part.raw_items()}
    for param, header in (("filename", "content-disposition"), ("name", "content-type")):
        value = part.get_param(param, None, header)
        if isinstance(value, str) and "\ufffd" in value and header in raw:
            # raw 8-bit bytes in the header (UTF-8 or GBK, undeclared): the email package
            # replaced them; read the parameter again from the header decoded as a whole
            value = _param_of(decoder.unfold(raw[header], "attachment name"), param, header)
        if isinstance(value, tuple):  # RFC 2231: (charset, language, bytes as latin-1)
            charset, _language, text = value
            data = _octets(str(text))
            name = decoder.decode(data, str(charset or "") or None, "attachment name")
        elif isinstance(value, str) and value:
            name = decoder.header(value, "attachment name")
        else:
            continue
        if name.strip():
            return name
    return None


def _param_of(value: str, param: str, header: str) -> str | None:
    holder = Message()
    holder[header] = value
    found = holder.get_param(param, None, header)
    return found if isinstance(found, str) else None


def _octets(text: str) -> bytes:
    """The bytes behind an RFC 2231 value, which the parser hands over as latin-1 text."""
    try:
        return text.encode("latin-1", "surrogateescape")
    except UnicodeEncodeError:  # the parser replaced something it could not read
        return text.encode("latin-1", "replace")


def _safe_filename(name: str | None, content_type: str) -> str:
    """A basename to show and to offer for download: no path, no control chars, not hidden."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[/\\]", name)[-1]
    if not name.isprintable():  # control and format characters go, odd spaces become " "
        name = " ".join("".join(c if c.isprintable() else " " * c.isspace() for c in name).split())
    name = _UNSAFE_IN_NAMES.sub("_", name).strip().lstrip(". ").rstrip(". ")
    if not name:
        return "attachment" + (_MIME_TYPES.guess_extension(content_type) or "")
    return _shorten(name)


def _shorten(name: str, limit: int = 150, byte_limit: int = 255) -> str:
    """At most `limit` characters and `byte_limit` UTF-8 bytes, keeping the extension."""
    if len(name) <= limit and len(name.encode("utf-8")) <= byte_limit:
        return name
    stem, dot, extension = name.rpartition(".")
    if not (dot and stem and 0 < len(extension) <= 16):
        stem, extension = name, ""
    extension = f".{extension}" if extension else ""
    stem = stem[: limit - len(extension)]
    while len((stem + extension).encode("utf-8")) > byte_limit:
        stem = stem[:-1]
    return (stem + extension).strip()


def _payload(part: Message, decoder: Decoder) -> bytes:
    if part.is_multipart():  # message/rfc822, message/delivery-status: parsed into messages
        try:
            subs = part.get_payload()
            return b"".join(sub.as_bytes() for sub in subs if isinstance(sub, Message))
        except Exception:  # a broken enclosed message is still an attachment, just empty
            decoder.note(f"enclosed {part.get_content_type()} could not be re-serialised")
            return b""
    data = part.get_payload(decode=True)
    return data if isinstance(data, bytes) else b""


def _html_to_text(html: str, decoder: Decoder) -> str:
    try:
        text = inscriptis.get_text(html)
    except Exception:  # lxml refuses some documents; tags must still never reach the text
        decoder.note("HTML could not be laid out; tags stripped")
        text = _TAG.sub(" ", _SCRIPT_STYLE.sub(" ", html))
    return text.strip()


# --- the whole message ----------------------------------------------------------------------


# The email package compiles a regex for each multipart boundary it meets (about 0.2 ms), and
# every mail brings boundaries of its own. Renamed to a few fixed names before parsing, they
# hit re's cache. Renaming touches only the boundary parameters and the lines that start with
# "--" and a boundary; if our names then show anywhere but there (in a part's text, a preamble,
# an enclosed message), the mail is parsed again as it came. A parameter spelt "BOUNDARY" is
# not looked for: its boundary is just not renamed (or, if also named "boundary" elsewhere,
# its lines show our name in a text and the mail is parsed as it came).
_BOUNDARY_PARAM = re.compile(
    rb"([Bb](?<![\w-][Bb])[Oo][Uu][Nn][Dd][Aa][Rr][Yy][ \t]*=[ \t]*)"
    rb"(?:(\")([0-9A-Za-z'()+_,./:=?-]{1,70})\"|()([0-9A-Za-z!#$%&'*+.^_`{|}~-]{1,70}))"
    rb"(?=[\s;]|$)"
)
_OUR_BOUNDARY = "caseloop-boundary-"


def _message_of(data: bytes) -> tuple[Message, dict[str, str]]:
    """The parsed message, and the boundaries renamed in it: our name -> the sender's."""
    params = []  # found by bytes.find, which skips kilobytes of base64 far faster than re
    at = data.find(b"oundary")
    while at > 0:
        if param := _BOUNDARY_PARAM.match(data, at - 1):
            params.append(param)
        at = data.find(b"oundary", at + 7)
    if not params or _OUR_BOUNDARY.encode() in data:
        return email.message_from_bytes(data, policy=compat32), {}
    found = dict.fromkeys(m[3] or m[5] for m in params)
    names = {b: f"{_OUR_BOUNDARY}{i}_".encode() for i, b in enumerate(found)}
    pieces, end = [], 0
    for m in params:
        quote = m[2] or b""
        pieces += [data[end : m.start()], m[1], quote, names[m[3] or m[5]], quote]
        end = m.end()
    renamed = b"".join([*pieces, data[end:]])
    for boundary in sorted(names, key=len, reverse=True):  # "abc-1" before "abc"
        renamed = renamed.replace(b"\n--" + boundary, b"\n--" + names[boundary])
    msg = email.message_from_bytes(renamed, policy=compat32)
    if not _renamed_cleanly(msg):
        return email.message_from_bytes(data, policy=compat32), {}
    return msg, {ours.decode(): theirs.decode() for theirs, ours in names.items()}


def _renamed_cleanly(msg: Message) -> bool:
    """Our boundary names show nowhere but in boundaries: no text or enclosed mail changed."""
    for part in msg.walk():
        if part.get_content_maintype() == "message":
            return False  # an enclosed message is kept as bytes, its boundaries included
        texts: list[object] = [part.preamble, part.epilogue]
        if not part.is_multipart():
            texts.append(part.get_payload())
        # A renamed line holds a "-"; base64 has none, so most of the bytes are passed over.
        if any(isinstance(t, str) and "-" in t and _OUR_BOUNDARY in t for t in texts):
            return False
    return True


# A header line: a field name (printable ASCII but ":"), a colon. "From " is mbox's separator.
_HEADER_LINE = re.compile(rb"[!-9;-~]{1,76}[ \t]*:|From ")
_JUNK_LINES = 3  # lines a forwarding tool or a paste may put before the headers


def _without_junk(data: bytes) -> tuple[bytes, bytes]:
    """(what comes before the headers, the mail): a stray line such as "---- Original email
    message ----" would otherwise make the parser take the whole mail for a body."""
    if _HEADER_LINE.match(data):
        return b"", data
    start = 0
    for _ in range(_JUNK_LINES):
        end = data.find(b"\n", start)
        if end < 0 or end - start > 200:
            break
        start = end + 1
        following = data[start:].lstrip(b"\r\n")  # blank lines between junk and headers
        if _HEADER_LINE.match(following) and _HEADER_LINE.match(following.split(b"\n", 1)[-1]):
            return data[: len(data) - len(following)], following
    return b"", data


def _parse(raw: bytes) -> ParsedMessage:
    junk, data = _without_junk(raw.lstrip(b"\r\n\t "))
    msg, renamed = _message_of(data)
    if not msg.keys():
        raise ParseError("not an email (no headers)")
    raw_headers: dict[str, list[str]] = {}  # lower-case name -> raw values, in order
    for name, value in msg.raw_items():
        if renamed and _OUR_BOUNDARY in value:  # the sender's boundary, as written
            for ours, theirs in renamed.items():
                value = value.replace(ours, theirs)
        raw_headers.setdefault(name.lower(), []).append(value)
    decoder = Decoder()
    if junk:
        first = junk.strip().split(b"\n", 1)[0].decode("utf-8", "replace").strip()
        decoder.note(f"line(s) before the headers dropped: {first[:80]!r}")

    leaves = list(_leaves(msg, decoder))
    labels = [leaf.get_content_charset() for leaf in leaves]  # each read once: params cost
    for label in labels:
        decoder.hint(label)
    from_name, from_address, sender_header = _sender(raw_headers, decoder)

    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    for leaf, label in zip(leaves, labels, strict=True):
        content_type = leaf.get_content_type()
        if content_type.startswith("multipart/"):  # no boundary: the parser kept one text
            content_type = "text/plain"
        filename = _filename(leaf, decoder)
        is_body = (
            content_type in ("text/plain", "text/html")
            and filename is None
            and leaf.get_content_disposition() != "attachment"
        )
        payload = _payload(leaf, decoder)
        if not is_body:
            attachments.append(
                Attachment(_safe_filename(filename, content_type), content_type, payload)
            )
            continue
        if content_type == "text/html":
            if label is None and (meta := _META_CHARSET.search(payload[:4096])):
                label = meta[1].decode("ascii")
            html.append(decoder.decode(payload, label, "html").replace("\r\n", "\n"))
        else:
            plain.append(decoder.decode(payload, label, "body").replace("\r\n", "\n"))

    headers = {name: _header(name, values[0], decoder) for name, values in raw_headers.items()}
    reply_to = _addresses(raw_headers.get("reply-to", [])[:1], decoder, "reply-to header")
    date = _date(headers.get("date"))
    if date is None and "date" in headers:
        decoder.note("date header unparseable")
    for part in (msg, *leaves):
        for defect in part.defects:
            decoder.note(f"MIME structure: {type(defect).__name__}")

    plain_text = "\n".join(plain)
    html_text = "\n".join(html) or None
    if plain_text.strip() or html_text is None:
        text = plain_text
    else:
        text = _html_to_text(html_text, decoder)

    return ParsedMessage(
        raw=raw,
        message_id=_message_id(headers.get("message-id")),
        in_reply_to=_message_ids(headers.get("in-reply-to"))[:MAX_REFERENCES],
        references=_references(headers.get("references"), decoder),
        from_name=from_name,
        from_address=from_address,
        reply_to=reply_to[0][1] if reply_to else None,
        to=_mailboxes(raw_headers.get("to", []), decoder, "to header"),
        cc=_mailboxes(raw_headers.get("cc", []), decoder, "cc header"),
        return_path=_return_path(headers.get("return-path")),
        subject=headers.get("subject", ""),
        date=date,
        text=text,
        html=html_text,
        attachments=tuple(attachments),
        headers=MappingProxyType(headers),
        defects=tuple(decoder.defects),
        sender_header=sender_header,
    )


# --- the pipeline step ------------------------------------------------------------------------


class Parse:
    name = "parse"
    description = "bytes -> parsed message, raw mail and attachments stored; bad mail quarantined"

    def process(self, prep: Prepared, config: Config, blobs: BlobWriter) -> None:
        raw = prep.item.raw
        limit = config.intake.max_message_size
        if len(raw) > limit:
            prep.stop("quarantined", f"message is {len(raw)} bytes, over max_message_size {limit}")
            return
        prep.raw_sha256 = hashlib.sha256(raw).hexdigest()  # the bytes go into source_items
        try:
            message = parse_message(raw)
        except ParseError as exc:
            prep.stop("quarantined", str(exc))
            return
        for part in message.attachments:
            if len(part.payload) > config.intake.max_attachment_size:
                prep.notes.append(
                    f"{prep.item.label}: attachment {part.filename!r} over max_attachment_size, "
                    "kept only in the raw mail"
                )
                continue
            prep.attachments.append(
                StoredAttachment(
                    filename=part.filename,
                    content_type=part.content_type,
                    size=len(part.payload),
                    sha256=blobs.put(part.payload),
                )
            )
        prep.new_text = strip_quotes(message.text)
        prep.message = message  # the raw bytes travel once, in prep.item
