"""Registration fields a complaint mail gives (PROCEDURE §2), and what is still missing.

extract_fields finds phone, respondent, order number, purchase date, amount and demand in the
consumer's words; missing_essentials says which registration essentials a mail still lacks, so
the acknowledgement can ask for them once; merge_reply picks up what the consumer's answer
adds. Register (prepare stage) fills Prepared.fields/missing for mail. Group complaints (many
consumers against one respondent) are handlers/group.py's.

Which essentials a mail must give (ESSENTIALS, the same keys as handlers/forms.py):
- name: the From display name, else a signature or "我叫X / My name is X / 姓名：X";
- respondent: who the complaint is about (a consumer association handles many businesses);
  a mail about the business it is sent to ("贵店", "your store") needs none;
- purchase: any of order number, purchase date, amount; not asked for privacy complaints,
  which are about data, not a purchase;
- description: the consumer's own words, at least a sentence (6 CJK characters or 3 words).
Contact is the sender's address itself; evidence is invited in every acknowledgement.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, NamedTuple

from daemon.config import Config
from handlers.context import BlobWriter, Prepared
from handlers.forms import ESSENTIALS, PURCHASE_FIELDS

MAIL_FIELDS = ("phone", "respondent", "order_number", "purchase_date", "amount", "demand")
DEMANDS = ("refund", "return", "exchange", "repair", "compensation", "apology")

# -- phone -----------------------------------------------------------------------------------
_MOBILE = re.compile(
    r"(?<![0-9A-Za-z+])(?:(?:\+|00)\s?86[\s-]?"
    r"|\(\+?86\)\s?)?(1[3-9]\d)[\s-]?(\d{4})[\s-]?(\d{4})(?!\d)"
)
_LANDLINE = re.compile(
    r"(?<![0-9A-Za-z])(?:(?:\+|00)\s?86[\s-]?)?\(?(0\d{2,3})\)?[\s-]?(\d{7,8})(?:\s?(?:转|ext\.?"
    r"|x)\s?(\d{1,5}))?(?!\d)",
    re.IGNORECASE,
)


def find_phone(text: str) -> str | None:
    """A Chinese mobile (11 digits) or landline ("010-12345678"); a mobile wins."""
    mobile = _MOBILE.search(text)
    if mobile:
        return "".join(mobile.groups())
    for landline in _LANDLINE.finditer(text):
        area, number, ext = landline.groups()
        if area.startswith("0") and len(area) + len(number) in (10, 11, 12):
            return f"{area}-{number}" + (f"-{ext}" if ext else "")
    return None


# -- order number ----------------------------------------------------------------------------
_ORDER = re.compile(
    r"(?:订单号码?|订单编号|订单|order\s*(?:no\.?|number|num\.?|#|id|ref(?:erence)?)|order)"
    r"\s*(?:是|为|:|：|#|＃)?\s*[:：#＃]?\s*([A-Za-z0-9][A-Za-z0-9-]{3,39})",
    re.IGNORECASE,
)


def find_order_number(text: str) -> str | None:
    for match in _ORDER.finditer(unicodedata.normalize("NFKC", text)):
        value = match.group(1).rstrip("-")
        if sum(c.isdigit() for c in value) >= 4:
            return value
    return None


# -- amount ----------------------------------------------------------------------------------
_NUMBER = r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?"
_AMOUNT = re.compile(
    rf"(?:[¥￥]|\bRMB|\bCNY)\s*{_NUMBER}(?![\d.,]?\d)"
    rf"|(?<![\d.,]){_NUMBER}\s*(?:元|块钱|块|RMB\b|CNY\b|yuan\b|rmb\b)",
    re.IGNORECASE,
)


# A sum said to be the whole: "共897元", "合计：¥1,299", "total of 450 yuan"
_TOTAL_WORD = re.compile(r"(?:合计|总计|共计|总共|一共|总价|总金额|总额|实付款?|共|(?i:\btotal))")


def find_amount(text: str) -> str | None:
    """The sum of money, normalised ("¥1,299" -> "1299.00"): the one said to be the total
    ("单价299元，买了3个，共897元"), else the first."""
    match = _AMOUNT.search(text)
    if not match:
        return None
    for total in _AMOUNT.finditer(text, match.start()):
        before = text[max(0, total.start() - 12) : total.start()]
        if _TOTAL_WORD.search(before):
            match = total
            break
    whole, cents = (match.group(1), match.group(2)) if match.group(1) else match.group(3, 4)
    try:
        value = Decimal(whole.replace(",", "") + "." + (cents or "0"))
    except InvalidOperation:
        return None
    return f"{value:.2f}"


# -- purchase date ---------------------------------------------------------------------------
_MONTHS = {
    m: i + 1
    for i, names in enumerate(
        (
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        )
    )
    for m in names
}
_MONTH = (
    r"(jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)


class _English(NamedTuple):
    """A case-insensitive English pattern, also compiled case-sensitive for lowered text.

    re with IGNORECASE tries every alternative at every character; the same pattern without it
    on text.lower() jumps between possible first letters, three times faster. The two find the
    same matches (the same spans, groups in lower case) in any text without İ, ı, ſ or K: those
    are the only characters IGNORECASE folds onto ASCII letters, İ the only one whose lower()
    is longer, and lower() never changes what \\w, \\d or \\s match. english() picks the view.
    """

    folded: re.Pattern[str]
    lower: re.Pattern[str]

    @classmethod
    def of(cls, pattern: str) -> _English:
        if re.search(r"[A-Z]", re.sub(r"\\.", "", pattern)):
            raise ValueError(f"English patterns are written in lower case: {pattern!r}")
        return cls(re.compile(pattern, re.IGNORECASE), re.compile(pattern))

    def finditer(self, view: _View) -> Iterator[re.Match[str]]:
        return (self.lower if view.lowered else self.folded).finditer(view.text)

    def search(self, view: _View) -> re.Match[str] | None:
        return (self.lower if view.lowered else self.folded).search(view.text)


class _View(NamedTuple):
    text: str
    lowered: bool


# What an English word could start with under IGNORECASE: ASCII letters, and the four other
# characters re folds onto them (İ ı ſ K). A text without any has no English word to find.
_LATIN = re.compile(r"[A-Za-z\u0130\u0131\u017f\u212a]")
_FOLDS = re.compile(r"[\u0130\u0131\u017f\u212a]")


def english(text: str) -> _View:
    """The text as _English patterns read it: lowered, unless it holds İ, ı, ſ or K."""
    return _View(text, False) if _FOLDS.search(text) else _View(text.lower(), True)


# The lookbehinds sit after the first digits, not before: a pattern that starts with a digit
# or a literal is scanned by jumping to the next such character, one that starts with a
# lookbehind tries every position. "(?<!\d)(20|19)" is "(20|19)(?<!\d\d\d)", "(?<![...])\d" is
# "\d(?<![...]\d)": the same matches, three times faster.
_DATES_ZH = (
    (
        "ymd",
        re.compile(
            r"((?:20|19)(?<!\d\d\d)\d{2})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*[日号]?(?!\d)"
        ),
    ),
    ("md", re.compile(r"(\d(?<![\d年/.-]\d)\d?)\s*月\s*(\d{1,2})\s*[日号]")),
)
_DATES_EN = (
    (
        "dmy",
        _English.of(rf"\b(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?{_MONTH}(?:,?\s+(\d{{4}}))?\b"),
    ),
    ("mdy", _English.of(rf"\b{_MONTH}\s+(\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(\d{{4}}))?\b")),
)
# Every English date names a month, so starts so (in lower case).
_MONTH_NAME = re.compile(r"jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec")
# Words saying a purchase, Chinese and English apart: a Chinese alternation of literals is
# scanned fast, and a text with no Latin letter is never scanned for the English words (their
# matches never overlap, so the two scans find what one alternation of both would).
_PURCHASE_WORDS_ZH = re.compile(r"购买|购于|买的|买了|下单|下的单|订购|付款|支付|消费")
_PURCHASE_WORDS_EN = _English.of(r"bought|purchased|ordered|order(ed)? on|paid")
# What happened later: a date right by one of these is when it broke, not when it was bought
_INCIDENT_WORDS_ZH = re.compile(
    r"坏了|坏掉|出现|发现|故障|损坏|漏水|起火|爆炸|停止工作|不能用|无法使用"
)
_INCIDENT_WORDS_EN = _English.of(r"broke|broken|stopped|failed|leak(ed|ing)?|caught fire|happened")


def _date_of(kind: str, groups: tuple[str | Any, ...], today: date | None) -> date | None:
    try:
        if kind == "ymd":
            return date(int(groups[0]), int(groups[1]), int(groups[2]))
        if kind == "md":
            month, day, year = int(groups[0]), int(groups[1]), None
        elif kind == "dmy":
            day, month = int(groups[0]), _MONTHS[groups[1].lower()]
            year = int(groups[2]) if groups[2] else None
        else:
            month, day = _MONTHS[groups[0].lower()], int(groups[1])
            year = int(groups[2]) if groups[2] else None
        if year is not None:
            return date(year, month, day)
        if today is None:
            return None  # "11月1日" of which year? Without a reference date, nobody knows.
        found = date(today.year, month, day)
        return found if found <= today else date(today.year - 1, month, day)
    except (ValueError, KeyError):
        return None


def _nearest(match: re.Match[str], words: list[tuple[int, int]]) -> int:
    """Characters between the match and the nearest of `words` within 25, else 1000."""
    gaps = [max(start - match.end(), match.start() - end, 0) for start, end in words]
    return min((g for g in gaps if g <= 25), default=1000)


def find_purchase_date(text: str, today: date | None) -> str | None:
    """ISO date: the one said closest to a purchase word, else the first; never a future date."""
    words = [(m.start(), m.end()) for m in _PURCHASE_WORDS_ZH.finditer(text)]
    later = [(m.start(), m.end()) for m in _INCIDENT_WORDS_ZH.finditer(text)]
    matches: list[tuple[str, re.Match[str]]] = []
    for kind, pattern in _DATES_ZH:
        if kind == "ymd" or "月" in text:
            matches += [(kind, m) for m in pattern.finditer(text)]
    if _LATIN.search(text):
        view = english(text)
        words += [(m.start(), m.end()) for m in _PURCHASE_WORDS_EN.finditer(view)]
        later += [(m.start(), m.end()) for m in _INCIDENT_WORDS_EN.finditer(view)]
        if not view.lowered or _MONTH_NAME.search(view.text):
            for kind, english_pattern in _DATES_EN:
                matches += [(kind, m) for m in english_pattern.finditer(view)]
    found: list[tuple[int, int, date]] = []
    for kind, match in matches:
        value = _date_of(kind, match.groups(), today)
        if value is None or (today is not None and value > today):
            continue
        near = _nearest(match, words)
        if _nearest(match, later) < min(near, 1000):
            continue  # the day it broke (or leaked, or was found), not the purchase
        found.append((near, match.start(), value))
    if not found:
        return None
    return min(found)[2].isoformat()


# -- respondent ------------------------------------------------------------------------------
_STOP = '，。,；;！!？?：:、\n“”"「」'
_VALUE = rf"([^{_STOP}]{{2,60}})"
_CAP_NAME = r"((?:[A-Z0-9][\w&'.-]*)(?:\s+(?:[A-Z0-9&(][\w&'.()-]*|of|and|the|de|&))*)"
_RESPONDENT_PATTERNS = (
    re.compile(rf"被投诉(?:方|人|单位|商家|企业|对象)(?:名称)?\s*[:：]\s*{_VALUE}"),
    re.compile(r"(?im)^\s*respondent\s*[:：]\s*([^\n;]{2,80})"),
    re.compile(rf"(?:商家|店铺|店名|商户|卖家|经营者|网店|门店)(?:名称)?\s*[:：]\s*{_VALUE}"),
    re.compile(
        r"(?im)^\s*(?:shop|store|seller|merchant|business|retailer|company)\s*(?:name)?\s*[:：]"
        r"\s*([^\n;]{2,80})"
    ),
    re.compile(rf"投诉(?:对象|的是)\s*[:：]?\s*{_VALUE}"),
    re.compile(
        r"(?:在|从|向|投诉|找)(?:(?!买"
        r"|购)[^，。！？\n“”\"]){0,10}?[“\"「『]([^”\"」』\n]{2,30})[”\"」』]"
    ),
    re.compile(
        r"(?:在|从|向)([^在从向" + _STOP + r"\s]{2,30}?)(?:上|里|那里)?"
        r"(?:购买|购入|买的|买了|买过|下单|订购|订了|消费|办理)"
    ),
    re.compile(
        rf"\b(?:complaint|complain|complaining)\s+(?:is\s+)?(?:against|about)\s+{_CAP_NAME}"
    ),
    re.compile(rf"\bagainst\s+{_CAP_NAME}"),
    re.compile(
        rf"\b(?:buy|bought|purchased|ordered|booked|had (?:lunch|dinner|a meal)|shopped|stayed)\b"
        rf"[^.\n]{{0,40}}?\b(?:from|at)\s+(?:the\s+)?{_CAP_NAME}"
    ),
    re.compile(rf"\b(?:contract|account|subscription|membership|order) with\s+{_CAP_NAME}"),
    re.compile(rf"(?:公司)(?:名称)?\s*[:：]\s*{_VALUE}"),
    re.compile(rf"\bfrom\s+{_CAP_NAME}"),  # last resort: "my order 4471 from StyleHub"
)
_NOT_A_RESPONDENT = re.compile(
    r"^(网上|线上|网店|店里|这家|他们家|他家|该店|那里|这里|那家|实体店|门店|商场|超市|网络|手机上"
    r"|app|APP"
    r"|their|the|a|an|my|our|your|them|you|it|this|that)$"
    r"|^\d|^(on|in|at|I|we)\b|^(一个|一家|某个|个人|朋友|网友)"
    r"|^(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*$"
    r"|^(monday|tuesday|wednesday|thursday|friday|saturday|sunday|china|beijing|shanghai)$",
    re.IGNORECASE,
)
_TRAILING = re.compile(r"(\s+(?:on|in|at|for|last|this|via|and|but|because|with)\b.*|[\s.]+)$")


_US = re.compile(
    r"^(贵|本)(店|公司|司|方|平台|商城|网站|酒店|餐厅)$|^你们(的)?(店|公司|商城|平台|家|网站)$",
)
_ADDRESSES_US = re.compile(
    r"(贵|本)(店|公司|司|平台|商城|网站|酒店|餐厅)|你们(的)?(店|公司|商城|平台|家|网站)"
    r"|\byour (shop|store|company|website|site|restaurant|hotel|firm|online shop|app)\b",
    re.IGNORECASE,
)


def addresses_us(text: str) -> bool:
    """The complaint is about the business it is sent to (贵店, 你们公司, "your store")."""
    return bool(_ADDRESSES_US.search(text))


def find_respondent(text: str) -> str | None:
    """The business complained about, as written; labelled forms win over phrases."""
    for pattern in _RESPONDENT_PATTERNS:
        for match in pattern.finditer(text):
            value = re.split(r"\.\s", match.group(1).strip())[0]  # "Acme Ltd. Many of us"
            value = _TRAILING.sub("", value).strip(" \t-—:：")
            if value.count("(") > value.count(")"):
                value = value.rsplit("(", 1)[0].strip()
            if len(value) >= 2 and not (_NOT_A_RESPONDENT.search(value) or _US.match(value)):
                return value[:200]
    return None


# -- demand ----------------------------------------------------------------------------------
# Each demand's words: the Chinese alternatives, then the English ones. The two halves also
# serve apart, as a quick "can this sentence match at all?" before the whole pattern runs: a
# Chinese alternation of literals is scanned fast, and the English half (IGNORECASE, where re
# tries every alternative at every character) only runs on text with a Latin letter.
_DEMAND_WORDS = (
    ("refund", r"退款|退钱|退费|退还.{0,4}(款|钱|费)", r"\brefund\w*|\bmoney back\b"),
    ("return", r"退货|退回", r"\breturn (it|them|the \w+)\b|\bsend (it|them) back\b"),
    ("exchange", r"换货|换一个|换一台|换新|更换", r"\bexchange\w*|\breplace(ment|d)?\b"),
    ("repair", r"维修|修理|修好|返修", r"\brepair\w*|\bfix (it|them|the \w+)\b"),
    (
        "compensation",
        r"赔偿|补偿|赔付|假一赔|退一赔|三倍|十倍",
        r"\bcompensat\w*|\bdamages\b",
    ),
    ("apology", r"道歉|致歉|赔礼", r"\bapologi[sz]\w*|\bapology\b"),
)


class _Words(NamedTuple):
    """One set of words as a whole pattern and as its Chinese and English halves."""

    whole: re.Pattern[str]
    zh: re.Pattern[str]
    en: _English

    @classmethod
    def of(cls, zh: str, en: str) -> _Words:
        return cls(
            re.compile(f"{zh}|{en}", re.IGNORECASE),
            re.compile(zh),  # no case in Han characters
            _English.of(en),
        )

    def may_match(self, text: str, view: _View | None) -> bool:
        """Whether `whole` matches somewhere in the text; `view` is english(text), or None
        when the text has no Latin letter."""
        return self.zh.search(text) is not None or (
            view is not None and self.en.search(view) is not None
        )


_DEMANDS = tuple((name, _Words.of(zh, en)) for name, zh, en in _DEMAND_WORDS)
_ASKING = _Words.of(
    r"要求|诉求|希望|请求|请|需要|我要|我想|必须|应当|应该",
    r"\bwant\b|\bwould like\b|\brequest\w*|\bdemand\w*|\bexpect\w*|\bask(ing)? for\b|\bplease\b"
    r"|\binsist\b|\bi'd like\b|\bshould\b",
)
_NOT_WANTED = re.compile(
    r"(不要|不需要|不用|无需|不是要|并非要|don'?t want|do not want|not asking for|no need for|"
    r"rather than|instead of)[^，。,.!！？?；;]{0,6}$",
    re.IGNORECASE,
)
# Where a sentence may end: 。！？!? or a newline, or a full stop before a space or the end.
_SENTENCE_STOP = re.compile(r"[。！？!?\n]|\.(?!\S)")


def sentences(text: str) -> list[str]:
    r"""The text's sentences, each with its closing mark, in one pass.

    A sentence is a run of text up to and including 。！？!? or a full stop (one inside a word,
    as in "3.5" or "a.com", does not end it), or up to the end of the text. A line that stops
    without such a mark is not a sentence, but for its part up to its last full stop, if any.
    (What the regex `(?:[^。！？!?\n.]|\.(?!\s|$))+(?:[。！？!?.]|$)` finds with finditer,
    without its backtracking, which took quadratic time on long lines without a full stop.)
    """
    found: list[str] = []
    start, end = 0, len(text)
    for stop in _SENTENCE_STOP.finditer(text):
        at = stop.start()
        if at > start:
            if text[at] != "\n":
                found.append(text[start : at + 1])
            elif at == end - 1:  # a final newline: the text ends here
                found.append(text[start:at])
            else:
                last = text.rfind(".", start + 1, at)
                if last > start:
                    found.append(text[start : last + 1])
        start = at + 1
    if start < end:
        found.append(text[start:])
    return found


def find_demand(text: str) -> str | None:
    """What the consumer asks for, as normalised words in DEMANDS order: "refund,apology"."""
    lowered = _FOLDS.search(text) is None  # then every sentence's english() is its lower()
    split = [
        (s, _View(s.lower(), True) if lowered else _View(s, False))
        if _LATIN.search(s)
        else (s, None)
        for s in sentences(text)
    ]
    asking = [(s, view) for s, view in split if _ASKING.may_match(s, view)]
    found: set[str] = set()
    for sentence, view in asking or split:
        for name, words in _DEMANDS:
            if name in found or not words.may_match(sentence, view):
                continue
            for match in words.whole.finditer(sentence):
                if not _NOT_WANTED.search(sentence[: match.start()]):
                    found.add(name)
                    break
    return ",".join(d for d in DEMANDS if d in found) or None


# -- name ------------------------------------------------------------------------------------
_NAME_LABEL = re.compile(
    r"(?:姓名|联系人|投诉人|名字)\s*[:：]\s*([^\s，。,;；:：]{2,20})"
    r"|我叫\s*([\u4e00-\u9fff]{2,4})|我是\s*([\u4e00-\u9fff]{2,3})(?=[，,。\s])"
    r"|\b(?:my name is|name\s*:)\s*([A-Z][\w'-]+(?:\s+[A-Z][\w'-]+){0,3})",
    re.IGNORECASE,
)
_CLOSING = re.compile(
    r"^\s*(此致|敬礼|谢谢|感谢|祝好|顺祝|盼复|(best |kind |warm )?regards|best|thanks|thank you|"
    r"sincerely|yours( sincerely| faithfully| truly)?|cheers|many thanks)[,，!！。.\s]*$",
    re.IGNORECASE,
)
_SIGNATURE_NAME = re.compile(
    r"^\s*([\u4e00-\u9fff·]{2,5}|[A-Z][a-z'-]+(?:\s+[A-Z][a-z'-]+){0,2})\s*$"
)


def find_name(text: str) -> str | None:
    """The complainant's name when the text says it, or the line under a closing phrase."""
    match = _NAME_LABEL.search(text)
    if match:
        return next(g for g in match.groups() if g).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if _CLOSING.match(line):
            for candidate in lines[i + 1 : i + 3]:
                name = _SIGNATURE_NAME.match(candidate)
                if name and not _CLOSING.match(candidate):
                    return name.group(1)
    return None


def complainant_name(
    from_name: str, from_address: str, text: str, signature: str = ""
) -> str | None:
    """The From display name unless it is only the address; else what the text says, else
    the signature's first line when it is a name."""
    display = from_name.strip().strip("\"'")
    local = from_address.partition("@")[0]
    if display and "@" not in display and display != local:  # "Zhao" <zhao@...> is a name
        return display
    said = find_name(f"{text}\n{signature}")
    if said:
        return said
    first = next((line for line in signature.splitlines() if line.strip()), "")
    name = _SIGNATURE_NAME.match(first)
    return name.group(1) if name else None


# -- fields, essentials, replies -------------------------------------------------------------


def extract_fields(text: str, today: date | None = None) -> dict[str, str]:
    """The registration fields a complaint's text gives (MAIL_FIELDS), only those found.

    `today` (in the configured zone) dates "11月1日" or "on 1 Nov": the latest such day that
    is not in the future. Without it, only dates that give the year are taken.
    """
    text = text.replace("\u3000", " ")
    found = {
        "phone": find_phone(text),
        "respondent": find_respondent(text),
        "order_number": find_order_number(text),
        "purchase_date": find_purchase_date(text, today),
        "amount": find_amount(text),
        "demand": find_demand(text),
    }
    return {k: v for k, v in found.items() if v}


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")  # runs: fewer matches to count
_WORD = re.compile(r"[A-Za-z]{2,}")


def has_description(text: str) -> bool:
    """At least a sentence of the consumer's own words (6 CJK characters or 3 words)."""
    return sum(map(len, _CJK.findall(text))) >= 6 or len(_WORD.findall(text)) >= 3


def missing_essentials(
    fields: Mapping[str, Any],
    name: str | None,
    description: str | None,
    category: str | None = None,
) -> list[str]:
    """Essentials (ESSENTIALS names, in that order) a complaint mail does not give.

    A mail about the business it is sent to ("在贵店买的", "your store") names its respondent:
    the business itself, which a case records as no respondent (None) rather than "贵店".
    """
    missing = []
    for essential in ESSENTIALS:
        if essential == "name" and not (name or "").strip():
            missing.append("name")
        elif essential == "respondent" and not (
            fields.get("respondent") or addresses_us(description or "")
        ):
            missing.append("respondent")
        elif (
            essential == "purchase"
            and category != "privacy"
            and not any(fields.get(f) for f in PURCHASE_FIELDS)
        ):
            missing.append("purchase")
        elif essential == "description" and not has_description(description or ""):
            missing.append("description")
    return missing


def merge_reply(existing: Mapping[str, Any], extra_text: str, today: date | None) -> dict[str, str]:
    """Fields the consumer's reply gives that the case does not have yet (never overwrites).

    Besides MAIL_FIELDS, a "name" the reply states ("姓名：张三", "My name is Jane Doe").
    """
    found = extract_fields(extra_text, today)
    name = find_name(extra_text)
    if name:
        found["name"] = name
    return {k: v for k, v in found.items() if not existing.get(k)}


_SIGNATURE_LINE = re.compile(r"^\s*--\s*$")
_QUOTE_START = re.compile(
    r"^\s*(>|-{2,}\s*(original message|原始邮件)|.*\b(wrote|写道|寫道)\b.*:?\s*$|(发件人"
    r"|from)\s*[:：])",
    re.IGNORECASE,
)


def signature_of(text: str) -> str:
    """The sender's signature block ("-- " up to the quoted history), which strip_quotes drops."""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if _QUOTE_START.match(line):
            return ""
        if _SIGNATURE_LINE.match(line):
            block = []
            for below in lines[i + 1 : i + 13]:
                if _QUOTE_START.match(below):
                    break
                block.append(below)
            return "\n".join(block).strip()
    return ""


class Register:
    name = "register"
    description = "registration fields from a complaint mail, and the essentials still missing"

    def process(self, prep: Prepared, config: Config, blobs: BlobWriter) -> None:
        message = prep.message
        if prep.channel != "email" or prep.automatic or message is None:
            return
        text = prep.new_text or message.text
        today = message.date.astimezone(config.timezone).date() if message.date else None
        for key, value in extract_fields(f"{message.subject}\n{text}", today).items():
            prep.fields.setdefault(key, value)
        signature = signature_of(message.text)
        if signature and not prep.fields.get("phone"):
            phone = find_phone(signature)
            if phone:
                prep.fields["phone"] = phone
        name = complainant_name(message.from_name, message.from_address, text, signature)
        if name and name != message.from_name.strip() and not prep.fields.get("name"):
            prep.fields["name"] = name  # from the signature: the From header had none
        wanted = config.tickets.mail_essentials
        prep.missing = [
            m for m in missing_essentials(prep.fields, name, text, prep.category) if m in wanted
        ]


# -- the respondent, comparable ---------------------------------------------------------------
_SUFFIXES = re.compile(
    r"(股份有限公司|有限责任公司|有限公司|集团|公司|官方旗舰店|旗舰店|专卖店|专营店|官方店|自营店|"
    r"co\.?,? ?ltd\.?|company|limited|ltd\.?|inc\.?|llc|corp\.?|corporation|gmbh|plc|store|shop)$",
    re.IGNORECASE,
)
_PUNCT = re.compile(r"[\s.,()\[\]（）【】·'\"-]+")


@lru_cache(maxsize=4096)  # a group complaint names one respondent over and over
def normalise_respondent(value: str) -> str:
    """A comparable form: NFKC, case-folded, spaces and brackets gone, legal suffixes off.

    Conservative: "小米有限公司" and "小米公司" compare equal, "小米之家" stays different.
    """
    text = _PUNCT.sub("", unicodedata.normalize("NFKC", value).casefold())
    for _ in range(2):  # "XX集团有限公司", "Acme Store Inc."
        shorter = _SUFFIXES.sub("", text)
        if len(shorter) < 2:
            break
        text = shorter
    return text
