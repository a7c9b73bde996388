"""The new part of a reply, for the timeline: quoted history, signatures and mobile footers cut.

Mail clients mark the history they quote in a handful of ways, and Chinese clients in their own:

- an attribution line, "On Tue, Nov 24, 2026 at 10:02 AM Support <...> wrote:" (Gmail, Apple
  Mail, Thunderbird; Gmail wraps it over two lines),
  "Support <...> 于2026年11月24日周二 10:02写道：" (Gmail zh),
  "在 2026-11-24 10:02:11，"客服" <...> 写道：" (163, 126, Apple Mail zh);
- a separator line, "-----Original Message-----" (Outlook), "------------------ 原始邮件
  ------------------" (QQ Mail, Foxmail; its plain part may spell the spaces "&nbsp;"),
  "------------------ Original ------------------" (Foxmail), "----- 原始邮件 -----" (Sina);
- a header block, "From: / Sent: / To: / Subject:" (Outlook, after a line of underscores) or
  "发件人: / 发送时间: / 收件人: / 主题:" (Outlook zh, QQ Mail);
- "> " before every quoted line.

What comes after a separator, a header block or an attribution line that is not followed by
"> " lines is the quoted original, cut whole. Lines starting with ">" are dropped wherever they
are, so an answer written between or below quoted lines stays. Then the signature ("-- ") and a
mobile footer ("Sent from my iPhone", "发自我的iPhone", "来自网易邮箱大师") end the new text.

A forwarded message ("---------- Forwarded message ---------") is not quoted history: a
consumer forwards an order confirmation as evidence, so it stays in the timeline text.

mail-parser-reply was tried and not used: its Chinese patterns never match (its "写道" header
carries a look-ahead that rejects every line it would accept, its header blocks want ASCII
colons), it knows none of the QQ / Foxmail / 163 markers, it rewrites every line's whitespace,
and it takes ~600 µs for a 1.4 KB reply, where this takes a few dozen.
"""

from __future__ import annotations

import re

# Spaces as mail clients write them: plain, no-break (also as the HTML entity), ideographic.
_SPACES = re.compile(r"(?:&nbsp;|[\xa0\u3000])", re.I)

# Lines that end the new text and start the quoted original (matched on a normalised line).
_SEPARATOR = re.compile(
    r"[-_=]{2,} ?(?:原始邮件|原邮件|邮件原件|原始信息|原始郵件|回复的原邮件"
    r"|Original(?: (?:Message|Email|Mail))?|Reply Message) ?[-_=]{2,}",
    re.I,
)
# Lines that start a forwarded message: kept, and a header block right after them is kept too.
_FORWARD = re.compile(
    r"(?:[-_=]{2,} ?(?:Forwarded message|Forwarded Message|转发邮件信息|转发的邮件|转发邮件"
    r"|轉寄郵件) ?[-_=]{0,}|Begin forwarded message:?|以下为转发的邮件[:：]?)",
    re.I,
)
_RULE = re.compile(r"[_-]{10,}")  # Outlook's line of underscores above its header block

# "From: ..." / "发件人：..." header lines; the label names which kind of header it is.
_HEADER_LABEL = re.compile(
    r"\*{0,2}(From|Sent|Date|To|Cc|Subject|发件人|发送时间|日期|时间|收件人|抄送|主题"
    r"|寄件者|寄件人|寄件日期|收件者|副本|主旨)\*{0,2} ?[:：]",
    re.I,
)
_LABEL_KIND = {
    "from": "from",
    "发件人": "from",
    "寄件者": "from",
    "寄件人": "from",
    "sent": "date",
    "date": "date",
    "发送时间": "date",
    "日期": "date",
    "时间": "date",
    "寄件日期": "date",
    "to": "to",
    "收件人": "to",
    "收件者": "to",
    "cc": "cc",
    "抄送": "cc",
    "副本": "cc",
    "subject": "subject",
    "主题": "subject",
    "主旨": "subject",
}

# Attribution lines that say for sure what follows is quoted (on one line or wrapped over two).
_ATTRIBUTIONS = (
    re.compile(r"On\s.{4,300}?\s?wrote ?:", re.I),  # Gmail, Apple Mail, Thunderbird (en)
    re.compile(r"在\s?\d{4}\s?[-/.年].{0,250}?写道 ?[:：]?"),  # 163, 126, Apple Mail (zh)
    re.compile(r".{0,200}@.{0,100}?于\s?\d{4}\s?[-/.年].{0,120}?写道 ?[:：]?"),  # Gmail (zh)
)
_CLOCK = re.compile(r"\d:\d\d")

# Mobile and webmail footers, matched on a whole normalised line of at most _FOOTER_MAX chars.
_FOOTER = re.compile(
    r"(?:Sent|Envoyé|Enviado|Gesendet) (?:from|depuis|desde|von) (?:my|mon|mi|meinem|mein) .{0,30}?"
    r"(?:iPhone|iPad|iPod|Android|Galaxy|Samsung|Huawei|Xiaomi|Redmi|Honor|OnePlus|Pixel|BlackBerry"
    r"|Windows Phone|Nokia|OPPO|vivo|mobile|phone|smartphone|tablet|device|Handy|Mac)\b.{0,40}"
    r"|Sent from (?:Mail for Windows|Outlook|Yahoo Mail|Gmail|AOL Mobile Mail|Proton Mail)\b.{0,40}"
    r"|Sent from .{1,30} for (?:iOS|Android|iPhone|iPad)"
    r"|Get Outlook for (?:iOS|Android).{0,40}"
    r"|获取 ?Outlook ?for ?(?:iOS|Android)"
    r"|(?:发自|来自|寄自|從|从)我的 ?.{0,16}?(?:iPhone|iPad|iPod|Android|Mac|Galaxy|手机|手機|平板"
    r"|设备|裝置|华为|小米|荣耀|OPPO|vivo|魅族|一加|三星).{0,12}"
    r"|从我的 ?.{1,16}发送"
    r"|(?:发自|来自|寄自) ?(?:网易邮箱大师|网易邮箱|网易邮箱手机版|QQ邮箱|手机QQ邮箱"
    r"|QQ邮箱手机版|Foxmail|163邮箱|126邮箱|新浪邮箱|搜狐邮箱|阿里邮箱|钉钉|企业微信|Outlook"
    r"|邮箱大师).{0,20}"
    r"|(?:发自|来自) ?\S{1,12}(?:客户端|手机版|App)",
    re.I,
)
_FOOTER_MAX = 60
_SIGNATURE_MAX_LINES = 12  # a "--" with more below it is a divider, not a signature
_LOOKAHEAD = 6  # lines after "From:" in which the rest of a header block must show
_BLANK_RUN = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")

# Cheap tests first: most lines of a reply are prose, and this runs on every message.
_WROTE = ("wrote", "写道", "寫道", "writes")
_FOOTER_STARTS: tuple[str, ...] = ("Sent ", "Envoy", "Enviado", "Gesendet", "Get Outlook")
_FOOTER_STARTS += ("获取", "发自", "来自", "寄自", "從", "从")


def strip_quotes(text: str) -> str:
    """What the person wrote in this reply; the whole text, stripped, if it all looks quoted."""
    lines = text.split("\n")
    kept = lines[: _quote_start(lines, attributions=_wrote(text))]
    if ">" in text and any(line.lstrip().startswith(">") for line in kept):
        kept = _without_quoted_lines(kept)
    kept = kept[: _signature_start(kept)]
    new = "\n".join(kept).strip()
    if not new:
        return text.strip()
    if len(kept) != len(lines):
        new = _BLANK_RUN.sub("\n\n", new)
    return new


def _norm(line: str) -> str:
    if "&" in line or "\xa0" in line or "\u3000" in line:
        line = _SPACES.sub(" ", line)
    return " ".join(line.split())


def _wrote(line: str) -> bool:
    return "wrote" in line or "写道" in line or "寫道" in line or "writes" in line


def _quote_start(lines: list[str], attributions: bool) -> int:
    """Index of the first line of the quoted original (len(lines) if there is none).

    `attributions` False says no line says "wrote" or "写道", so none needs looking at for it.
    """
    forwarded = False  # just after a forward separator: its header block is not a quote
    for i, raw in enumerate(lines):
        stripped = raw.strip()
        if not stripped:
            continue
        first = stripped[0]
        if first == ">":
            continue
        if first in "-_=&" or (first == "B" and stripped.startswith("Begin forwarded")):
            line = _norm(raw)
            if _SEPARATOR.fullmatch(line):
                return _with_rule_above(lines, i)
            if _FORWARD.fullmatch(line):
                forwarded = True
                continue
        if ":" in stripped[:16] or "：" in stripped[:16]:  # "From:", "发件人：", "*Sent:*"
            line = _norm(raw)
            if _HEADER_LABEL.match(line):
                if not forwarded and _is_header_block(lines, i, line):
                    return _with_rule_above(lines, i)
                continue
        forwarded = False
        if attributions:
            size = _attribution_size(lines, i)
            if size and not _quoted_after(lines, i + size):
                return i
    return len(lines)


def _with_rule_above(lines: list[str], i: int) -> int:
    """Move the cut up over blank lines and Outlook's line of underscores."""
    j = i - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j >= 0 and _RULE.fullmatch(lines[j].strip()):
        return j
    return i


def _is_header_block(lines: list[str], i: int, line: str) -> bool:
    """A "From:" line followed by the Sent/To/Subject lines of a quoted header.

    A consumer describing a parcel writes "发件人：张伟 / 收件人：李娜 / 时间：11月1日" too; a
    client's header names an address or a time of day.
    """
    found = _HEADER_LABEL.match(line)
    if found is None or _LABEL_KIND[found[1].lower()] != "from":
        return False
    kinds: set[str] = set()
    clock = False  # a "Sent:" line with a time of day, as every client writes it
    for raw in lines[i + 1 : i + 1 + _LOOKAHEAD]:
        following = _norm(raw)
        label = _HEADER_LABEL.match(following)
        if label:
            kind = _LABEL_KIND[label[1].lower()]
            kinds.add(kind)
            clock = clock or (kind == "date" and _CLOCK.search(following) is not None)
    kinds.discard("from")
    if "@" in line:
        return len(kinds) >= 1
    return len(kinds) >= 2 and clock


def _attribution_size(lines: list[str], i: int) -> int:
    """1 or 2 if an attribution line ("On ... wrote:") starts at line i, else 0."""
    raw = lines[i]
    if _wrote(raw):
        line = _norm(raw)
        return 1 if len(line) <= 400 and _is_attribution(line) else 0
    if i + 1 < len(lines) and _wrote(lines[i + 1]):
        line = _norm(raw)
        if _may_wrap(line):
            joined = f"{line} {_norm(lines[i + 1])}"
            return 2 if len(joined) <= 400 and _is_attribution(joined) else 0
    return 0


def _is_attribution(line: str) -> bool:
    """A client's attribution names an address or a clock time; a person's sentence rarely does."""
    return ("@" in line or _CLOCK.search(line) is not None) and any(
        pattern.fullmatch(line) for pattern in _ATTRIBUTIONS
    )


def _may_wrap(line: str) -> bool:
    """The first half of an attribution wrapped over two lines."""
    return line.startswith(("On ", "在")) or ("于" in line and "@" in line)


def _quoted_after(lines: list[str], j: int) -> bool:
    """The next non-blank line from j on is a "> " quote."""
    for raw in lines[j : j + _LOOKAHEAD * 3]:
        if raw.strip():
            return raw.lstrip().startswith(">")
    return False


def _without_quoted_lines(lines: list[str]) -> list[str]:
    """Drop "> " lines and the attribution lines introducing them; keep answers in between."""
    kept: list[str] = []
    skip = 0
    for i, raw in enumerate(lines):
        if skip:
            skip -= 1
            continue
        stripped = raw.strip()
        if stripped.startswith(">"):
            continue
        if stripped:
            size = _attribution_size(lines, i)
            if size == 0 and stripped.rstrip(" :：").endswith(_WROTE):
                size = 1  # "Support wrote:" right above a quote: an attribution all the same
            if size and _quoted_after(lines, i + size):
                skip = size - 1
                continue
        kept.append(raw)
    return kept


def _signature_start(lines: list[str]) -> int:
    """Index of the signature delimiter or mobile footer that ends the new text."""
    text = "\n".join(lines)
    if "--" not in text and not any(start in text for start in _FOOTER_STARTS):
        return len(lines)
    for i, raw in enumerate(lines):
        stripped = raw.strip()
        if stripped == "--":  # RFC 3676's "-- " (some clients drop the space)
            if _few_lines_below(lines, i):
                return i
        elif stripped.startswith(_FOOTER_STARTS):
            line = _norm(raw)
            if len(line) <= _FOOTER_MAX and _FOOTER.fullmatch(line):
                return i
    return len(lines)


def _few_lines_below(lines: list[str], i: int) -> bool:
    """At most _SIGNATURE_MAX_LINES non-blank lines follow line i."""
    below = 0
    for j in range(i + 1, len(lines)):
        if lines[j].strip():
            below += 1
            if below > _SIGNATURE_MAX_LINES:
                return False
    return True
