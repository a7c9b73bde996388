"""Bytes of a declared, mislabelled or undeclared charset -> text, every guess noted.

Mail lies about charsets (LESSONS 8): Chinese clients label GBK and GB18030 text as GB2312,
Big5 mail carries cp950 and HKSCS characters, Japanese mailers send Shift_JIS headers with no
label, and some mail declares no charset or a wrong one. One Decoder per message decodes its
byte strings (bodies, raw 8-bit headers, RFC 2047 words) and keeps what it had to guess.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from functools import lru_cache

import charset_normalizer

# --- charsets -------------------------------------------------------------------------------

# Labels clients put on text written in a bigger charset: after the label, try these.
_SUPERSETS = {
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "big5": ("cp950", "big5hkscs"),
    "cp950": ("big5hkscs",),
    "big5hkscs": ("cp950",),
}
# Labels Python does not know but mail clients send.
_ALIASES = {"x-gbk": "gbk", "x-x-big5": "big5", "cn-big5": "big5", "x-euc-cn": "gb2312"}
# Single-byte labels that webmail and forms often put on UTF-8 text; they never fail to decode.
_LATIN = {"ascii", "iso8859-1", "iso8859-15", "cp1252"}
# Codecs that are not charsets, even though Python can look them up.
_NOT_CHARSETS = {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined"}
# Codecs whose text can be plain ASCII bytes that do not mean ASCII.
_NOT_ASCII_SUPERSETS = ("utf-16", "utf-32", "utf-7", "hz", "iso2022")
# A multi-byte charset declared anywhere in a message is the best guess for its raw 8-bit bytes.
_CJK = {"gb2312", "gbk", "gb18030", "big5", "cp950", "big5hkscs", "shift_jis", "euc_jp", "euc_kr"}
# What charset-normalizer may choose from: what our Chinese and English senders actually use.
_DETECTABLE = ["utf_8", "gb18030", "cp950", "big5hkscs", "shift_jis", "cp1252", "cp1251"]
# Below this many bytes statistics are guesswork (a name, a subject): valid GB2312 wins.
_SHORT = 200


@lru_cache(maxsize=256)
def _codecs_for(label: str) -> tuple[str, ...] | None:
    """Codec names to try, in order, for a declared charset label; None if unknown."""
    try:
        info = codecs.lookup(_ALIASES.get(label, label))
    except LookupError:
        return None
    if info.name in _NOT_CHARSETS or not getattr(info, "_is_text_encoding", True):
        return None
    return (info.name, *_SUPERSETS.get(info.name, ()))


def _try(data: bytes, codec: str) -> str | None:
    try:
        return data.decode(codec)
    except (UnicodeError, LookupError):
        return None


# What a decoded header must not carry: controls (an encoded CR/LF would cut the subject we
# quote and move the rest into a mail's first lines), line and paragraph separators, and the
# bidirectional overrides and isolates that make a subject read backwards.
_NOT_IN_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+")


def _one_line(text: str) -> str:
    """NULs dropped, every other run of controls and separators one space."""
    return _NOT_IN_ONE_LINE.sub(" ", text.replace("\x00", ""))


def clean_text(text: str) -> str:
    """No NUL (PostgreSQL text refuses it) and nothing that cannot be written as UTF-8."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


_KANA = re.compile(r"[\u3041-\u30ff]")
_NOT_JAPANESE = re.compile(r"[\uff61-\uff9f\ue000-\uf8ff]")  # half-width kana, user-defined


def _japanese(text: str) -> bool:
    """Whether Shift_JIS bytes read as cp932 make Japanese: kana among the kanji. Chinese
    bytes read so never give kana (GB2312 and Big5 have no 0x82/0x83 lead bytes) and give
    half-width katakana for their lead bytes 0xA1-0xDF."""
    kana = len(_KANA.findall(text))
    wide = sum(1 for ch in text if ord(ch) > 0x7F)
    return kana > 0 and kana * 5 >= wide and _NOT_JAPANESE.search(text) is None


class Decoder:
    """Decodes the byte strings of one message and notes every guess it had to make."""

    def __init__(self) -> None:
        self.defects: list[str] = []
        self.hints: list[str] = []  # CJK codecs declared somewhere in the message

    def note(self, defect: str) -> None:
        if defect not in self.defects:
            self.defects.append(defect)

    def hint(self, label: str | None) -> None:
        names = _codecs_for(label.lower()) if label else None
        if names and names[0] in _CJK:
            self.hints.extend(n for n in names if n not in self.hints)

    def decode(self, data: bytes, label: str | None, where: str) -> str:
        """Text of `data` labelled `label` (None if undeclared); never raises."""
        if not data:
            return ""
        label = (label or "").strip().strip("\"'").lower()
        names = _codecs_for(label) if label and label != "unknown-8bit" else None
        if names is None:
            if data.isascii():
                return clean_text(data.decode("ascii"))
            text, used = self._guess(data)
            if label and label != "unknown-8bit":
                self.note(f"unknown charset {label!r} read as {used} ({where})")
            elif used != "utf-8":
                self.note(f"undeclared charset detected as {used} ({where})")
            return clean_text(text)
        declared = names[0]
        if data.isascii() and not declared.startswith(_NOT_ASCII_SUPERSETS):
            return clean_text(data.decode("ascii"))
        # UTF-8 text is common under any label and is almost never valid UTF-8 by accident.
        if declared in _LATIN:  # these decode any bytes, so UTF-8 must be tried first
            order: tuple[str, ...] = ("utf-8", *names)
        else:
            order = (declared, "utf-8", *names[1:])
        for name in dict.fromkeys(order):
            text_or_none = _try(data, name)
            if text_or_none is None:
                continue
            if name == "utf-8" and declared != "utf-8":
                self.note(f"charset {label} declared but text is utf-8 ({where})")
            elif name != declared:
                self.note(f"charset {label} decoded as {name} ({where})")
            return clean_text(text_or_none)
        text, used = self._guess(data)
        self.note(f"charset {label} did not fit the bytes, read as {used} ({where})")
        return clean_text(text)

    def _guess(self, data: bytes) -> tuple[str, str]:
        """Decode bytes whose charset is unknown; returns (text, what was used)."""
        for name in ("utf-8", *self.hints):
            text = _try(data, name)
            if text is not None:
                return text, name
        if (text := _try(data, "cp932")) is not None and _japanese(text):
            return text, "cp932"  # Shift_JIS as Windows and most Japanese mailers write it
        if len(data) < _SHORT:
            text = _try(data, "gb2312")
            if text is not None:
                return text, "gb18030"  # the same text; gb18030 is the name that is always right
        best = charset_normalizer.from_bytes(data, cp_isolation=_DETECTABLE).best()
        if best is not None:
            names = _codecs_for(best.encoding) or (best.encoding,)
            for name in names:
                text = _try(data, name)
                if text is not None:
                    return text, name
            return str(best), best.encoding
        text = _try(data, "gb18030")
        if text is not None:
            return text, "gb18030"
        return data.decode("utf-8", "replace"), "utf-8 with replacement characters"

    # --- headers ---

    def header(self, raw: str, where: str) -> str:
        """A header value as people read it: unfolded, 8-bit bytes and RFC 2047 words decoded."""
        if raw.isascii() and "=?" not in raw:  # nothing to decode
            if "\n" in raw or "\r" in raw:
                raw = _FOLD.sub("", raw).replace("\r", "").replace("\n", "")
            raw = raw.replace("\t", " ")
            if not raw.isprintable():  # stray controls: one space each run, as when decoded
                raw = _one_line(raw)
            return raw.strip()
        decoded = self.words(self.unfold(raw, where), where)
        return clean_text(_one_line(decoded).strip())

    def unfold(self, raw: str, where: str) -> str:
        """Unfolds a header and decodes raw 8-bit bytes in it, leaving RFC 2047 words alone."""
        value = _FOLD.sub("", raw).replace("\r", "").replace("\n", "")
        if not value.isascii():  # the parser keeps raw bytes as surrogate escapes
            value = self.decode(value.encode("utf-8", "surrogateescape"), None, where)
        return value

    def words(self, value: str, where: str) -> str:
        """Decodes RFC 2047 encoded words; adjacent words are joined before decoding."""
        if "=?" not in value:
            return value
        pieces: list[str] = []
        # adjacent words waiting for their neighbours: (charset, its bytes in pieces), joined
        # once at the end, so a header of a million words is decoded in linear time
        pending: list[tuple[str, list[bytes]]] = []

        def flush() -> None:
            pieces.extend(self.decode(b"".join(data), charset, where) for charset, data in pending)
            pending.clear()

        pos = 0
        for match in _ENCODED_WORD.finditer(value):
            gap = value[pos : match.start()]
            if gap.strip(" \t") or not pending:  # whitespace between two words is dropped
                flush()
                pieces.append(gap)
            charset = match[1].split("*", 1)[0].lower()  # RFC 2231 language suffix
            data = _word_bytes(match[2], match[3])
            if data is None:
                flush()
                pieces.append(match[0])
                self.note(f"broken encoded word kept as written ({where})")
            elif pending and pending[-1][0] == charset:
                pending[-1][1].append(data)
            else:
                pending.append((charset, [data]))
            pos = match.end()
        flush()
        pieces.append(value[pos:])
        return "".join(pieces)


_FOLD = re.compile(r"\r?\n(?=[ \t])")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


def _word_bytes(encoding: str, payload: str) -> bytes | None:
    data = payload.encode("utf-8")
    if encoding in "qQ":
        return binascii.a2b_qp(data, header=True)
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4))
    except binascii.Error:
        return None
