"""A web-form row (JSON from daemon/sources/forms.py) -> the parsed message the pipeline knows.

The source reads exports and hands in one row at a time; this step turns a row into what the
mail steps expect: a ParsedMessage whose sender is the row's email and whose text is the
consumer's own words, the registration fields (phone, respondent, order number, purchase date,
amount, demand; unmapped columns under "extra") and the registration essentials still missing
(PROCEDURE §2), which the acknowledgement asks for. A row without a usable email cannot become a
case: it is quarantined with its problems as the reason.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any
from zoneinfo import ZoneInfo

from daemon.config import Config
from handlers.classify import detect_language
from handlers.context import BlobWriter, Prepared
from handlers.message import ParsedMessage

# What PROCEDURE §2 registers and a form can carry. Contact is the email itself; evidence
# cannot come in a form row, so the acknowledgement invites the consumer to reply with it.
ESSENTIALS = ("name", "respondent", "purchase", "description")
PURCHASE_FIELDS = ("order_number", "purchase_date", "amount")
# Registration fields that travel on to the case (intake.open_ticket: phone and respondent
# are columns of their own, the rest goes into ticket.extra).
CASE_FIELDS = ("phone", "respondent", "order_number", "purchase_date", "amount", "demand")

_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_NOT_ONE_ADDRESS = re.compile(r"[\s,;]")  # spaces, or a list of addresses
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_SPACES = re.compile(r"\s+")

# Staff read these in the case's timeline (not mail to the consumer: that is in templates/).
_LABELS = {
    "zh-CN": {
        "demand": "诉求",
        "name": "姓名",
        "phone": "电话",
        "respondent": "被投诉方",
        "order_number": "订单号",
        "purchase_date": "购买日期",
        "amount": "金额",
        "form": "来源",
        "row": "{source} 表单，{file} 第 {row} 行",
    },
    "en": {
        "demand": "Demand",
        "name": "Name",
        "phone": "Phone",
        "respondent": "Respondent",
        "order_number": "Order number",
        "purchase_date": "Purchase date",
        "amount": "Amount",
        "form": "Source",
        "row": "form {source}, {file} row {row}",
    },
}


def check_email(value: str | None) -> tuple[str | None, str | None]:
    """(address, None) for a usable address, else (None, the problem in a few words).

    Full-width characters typed on a Chinese keyboard (＠, ．) count as their ASCII twins;
    "mailto:" and "Name <address>" are unwrapped. The problem never quotes the value, so it can
    go into logs and reports without spreading addresses.
    """
    if value is None or not value.strip():
        return None, "missing email"
    text = unicodedata.normalize("NFKC", value).strip()
    if text[:7].lower() == "mailto:":
        text = text[7:].strip()
    if text.endswith(">") and "<" in text:
        text = parseaddr(text)[1]
    if _NOT_ONE_ADDRESS.search(text):
        return None, "invalid email: spaces or more than one address"
    local, at, domain = text.rpartition("@")
    if not at or not local:
        return None, "invalid email: no @"
    if "@" in local:
        return None, "invalid email: more than one @"
    if len(text) > 254 or len(local) > 64:
        return None, "invalid email: too long"
    if local.isascii():
        if not _LOCAL.fullmatch(local):
            return None, "invalid email: bad characters before the @"
    elif not all(c.isalnum() or c in "._+-" for c in local):
        return None, "invalid email: bad characters before the @"
    try:  # an ASCII domain is its own IDNA form; the labels are checked below either way
        ascii_domain = domain if domain.isascii() else domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None, "invalid email: bad domain"
    labels = ascii_domain.split(".")
    if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
        return None, "invalid email: bad domain"
    tld = labels[-1]
    if len(tld) < 2 or not (tld.isalpha() or tld.lower().startswith("xn--")):
        return None, "invalid email: bad domain"
    return f"{local}@{domain.lower()}", None


def missing_essentials(fields: Mapping[str, Any], mapped: Collection[str]) -> list[str]:
    """Registration essentials a row lacks: ESSENTIALS names, in that order.

    Name and description are always essential. Respondent and purchase details count only when
    the form collects them (a column is mapped): a shop's own site does not ask who the
    complaint is about, and its consumers should not be asked in every case either.
    """
    missing = []
    if not fields.get("name"):
        missing.append("name")
    if "respondent" in mapped and not fields.get("respondent"):
        missing.append("respondent")
    purchase = [f for f in PURCHASE_FIELDS if f in mapped]
    if purchase and not any(fields.get(f) for f in purchase):
        missing.append("purchase")
    if not fields.get("description"):
        missing.append("description")
    return missing


_PROBLEM_OF_MISSING = {
    "name": "missing name",
    "respondent": "missing respondent",
    "purchase": "missing purchase details (order number, date or amount)",
    "description": "empty description",
}


def row_problems(fields: Mapping[str, Any], mapped: Collection[str]) -> list[str]:
    """What is wrong with a row, for its file's report: email first, then missing essentials."""
    problems = []
    _, email_problem = check_email(fields.get("email"))
    if email_problem:
        problems.append(email_problem)
    problems += [_PROBLEM_OF_MISSING[m] for m in missing_essentials(fields, mapped)]
    return problems


def _one_line(text: str, limit: int) -> str:
    line = _SPACES.sub(" ", text).strip()
    return line if len(line) <= limit else line[:limit].rstrip() + "…"


def form_subject(fields: Mapping[str, str]) -> str:
    """The form's own subject column, else "<respondent>: <first 40 characters of the text>"."""
    if fields.get("subject"):
        return _one_line(fields["subject"], 200)
    respondent = _one_line(fields.get("respondent", ""), 60)
    description = _one_line(fields.get("description", ""), 40)
    return ": ".join(part for part in (respondent, description) if part)


def form_text(fields: Mapping[str, str], language: str, source: str, file: str, row: int) -> str:
    """The consumer's words first, then the other fields as "label: value" lines."""
    labels = _LABELS.get(language, _LABELS["en"])
    sep = "：" if language == "zh-CN" else ": "
    parts = []
    if fields.get("description"):
        parts.append(fields["description"].strip())
    if fields.get("demand"):
        parts.append(f"{labels['demand']}{sep}{fields['demand'].strip()}")
    details = [
        f"{labels[f]}{sep}{_one_line(fields[f], 500)}"
        for f in ("name", "phone", "respondent", "order_number", "purchase_date", "amount")
        if fields.get(f)
    ]
    origin = labels["row"].format(source=source, file=file, row=row)
    details.append(f"{labels['form']}{sep}{origin}")
    parts.append("\n".join(details))
    return "\n\n".join(parts) + "\n"


_SUBMITTED_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
                      "%Y-%m-%d", "%Y/%m/%d", "%Y年%m月%d日 %H:%M", "%Y年%m月%d日")  # fmt: skip


def submitted_at(value: str | None, zone: ZoneInfo) -> datetime | None:
    """A form's submission time (local, as exporters write it; ISO with an offset too), UTC."""
    text = (value or "").strip()
    if not text:
        return None
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        found = None
        for fmt in _SUBMITTED_FORMATS:
            try:
                found = datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if found is None:
        return None
    if found.tzinfo is None:
        found = found.replace(tzinfo=zone)
    return found.astimezone(UTC)


def _mapped_fields(config: Config, source: str) -> Collection[str]:
    for form in config.forms:
        if form.name == source:
            return form.columns.keys()
    return ("email", "name", *CASE_FIELDS, "description")  # unknown form: ask for everything


class ParseFormRow:
    name = "parse-form-row"
    description = "web-form row -> parsed message and registration fields; no email: quarantined"

    def process(self, prep: Prepared, config: Config, blobs: BlobWriter) -> None:
        item = prep.item
        prep.channel = "form"
        prep.raw_sha256 = hashlib.sha256(item.raw).hexdigest()  # the row JSON is kept
        try:
            row = json.loads(item.raw)
            fields = {str(k): str(v) for k, v in row["fields"].items() if v not in (None, "")}
            extra = {str(k): v for k, v in (row.get("extra") or {}).items()}
            problems = [str(p) for p in row.get("problems") or ()]
            file, number = str(row.get("file", "")), int(row.get("row", 0))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            prep.stop("quarantined", f"{item.label}: not a form row ({type(exc).__name__})")
            return
        email, email_problem = check_email(fields.get("email"))
        if email is None:
            why = "; ".join(problems) if problems else email_problem
            prep.stop("quarantined", f"{item.label}: {why}")
            return
        # The consumer's own words decide the language of the labels below and of the case;
        # Classify reads them with the respondent, not the labelled lines of form_text.
        words = "\n".join(fields.get(f, "") for f in ("subject", "description", "demand"))
        prep.language = detect_language(words, config.tickets.default_language)
        prep.words = "\n".join((fields.get("respondent", ""), words))
        prep.fields = {f: fields[f].strip() for f in CASE_FIELDS if fields.get(f)}
        if extra:
            prep.fields["extra"] = extra
        prep.missing = missing_essentials(fields, _mapped_fields(config, item.source))
        submitted = submitted_at(fields.get("submitted_at"), config.timezone)
        if submitted is not None:
            prep.fields["submitted_at"] = submitted.isoformat()
        elif fields.get("submitted_at"):
            prep.notes.append(f"{item.label}: unreadable submission time, taken as now")
        prep.message = ParsedMessage(
            raw=b"",
            # No Message-ID: a row is known by its source and row key (source_items), never
            # by an id a mail could carry first and so make the real submission a "duplicate".
            message_id=None,
            in_reply_to=(),
            references=(),
            from_name=_one_line(fields.get("name", ""), 200),
            from_address=email,
            reply_to=None,
            to=(),
            cc=(),
            return_path=None,
            subject=form_subject(fields),
            date=submitted,
            text=form_text(fields, prep.language, item.source, file, number),
            html=None,
            attachments=(),
            headers={},
            defects=tuple(problems),
        )
