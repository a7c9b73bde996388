"""TOML -> typed Config, loaded once; every error names the file, the key and the problem.

This is the parsing half of the config: _Reader walks one TOML table, one builder per section
turns it into the dataclasses of daemon/settings.py (the schema half), and `load` reads the
file. Defaults are not repeated here: a key that is absent takes the dataclass field's default
(read as `SectionConfig.field`). Every schema name is re-exported, so `from daemon.config import
Config` and `configmod.load` both work; settings.py imports nothing from here (no import loop).
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import holidays
import holidays.registry
from apscheduler.triggers.cron import CronTrigger

from daemon.clock import parse_size
from daemon.configreader import Reader as _Reader
from daemon.settings import (
    CATEGORIES,
    DEFAULT_DATA_DIR,
    DEFAULT_TIMEZONE,
    FORM_FIELDS,
    LANGUAGES,
    PRIORITIES,
    REGULATOR_CONTACT,
    ClassifyConfig,
    ClassifyRule,
    Config,
    ConfigError,
    DeliveryConfig,
    EscalationConfig,
    FormConfig,
    IntakeConfig,
    MailboxConfig,
    PrivacyConfig,
    RegulatorConfig,
    RoutingRule,
    Secret,
    SlaConfig,
    SlaPolicy,
    SmtpConfig,
    StaffMember,
    TicketsConfig,
)

__all__ = [  # the schema, re-exported for `from daemon.config import ...`
    "CATEGORIES",
    "DEFAULT_DATA_DIR",
    "DEFAULT_TIMEZONE",
    "EMBEDDED",
    "FORM_FIELDS",
    "LANGUAGES",
    "PRIORITIES",
    "ClassifyConfig",
    "ClassifyRule",
    "Config",
    "ConfigError",
    "DeliveryConfig",
    "EscalationConfig",
    "FormConfig",
    "IntakeConfig",
    "MailboxConfig",
    "PrivacyConfig",
    "RegulatorConfig",
    "RoutingRule",
    "Secret",
    "SlaConfig",
    "SlaPolicy",
    "SmtpConfig",
    "StaffMember",
    "TicketsConfig",
    "build",
    "find_config_path",
    "load",
]

EMBEDDED = "<embedded defaults>"


def _secret(reader: _Reader) -> Secret:
    file = reader.path("password_file", None)
    env = reader.get("password_env", str, None)
    command = reader.get("password_command", str, None)
    given = [
        n
        for n, v in (("password_file", file), ("password_env", env), ("password_command", command))
        if v is not None
    ]
    if len(given) > 1:
        raise reader.fail(given[1], f"give only one of {', '.join(given)}")
    if file is not None and not file.is_file():
        raise reader.fail("password_file", f"missing password file {file}")
    if env is not None and env not in os.environ:
        raise reader.fail("password_env", f"environment variable {env} is not set")
    return Secret(file=file, env=env, command=command)


def _mailbox(file: str, base: Path, data_dir: Path, table: dict[str, Any], i: int) -> MailboxConfig:
    r = _Reader(file, base, table, f"mailboxes[{i}].")
    name = r.require("name", str)
    kind = r.choice("type", ("maildir", "imap"), "maildir")
    address = r.address("address")
    aliases = r.addresses("aliases")
    if kind == "maildir":
        path = r.path("path", data_dir / "inbox")
        quarantine = r.path("quarantine_path", data_dir / "quarantine")
        box = MailboxConfig(
            name=name,
            type=kind,
            address=address,
            aliases=aliases,
            path=path,
            quarantine_path=quarantine,
        )
        r.done()
        return box
    host = r.require("host", str)
    security = r.choice("security", ("tls", "starttls", "none"), MailboxConfig.security)
    if security == "none" and host not in ("localhost", "127.0.0.1", "::1"):
        raise r.fail("security", '"none" is only allowed for a loopback host')
    port = r.get("port", int, 993 if security == "tls" else 143)
    box = MailboxConfig(
        name=name,
        type=kind,
        address=address,
        aliases=aliases,
        host=host,
        port=port,
        security=security,
        username=r.get("username", str, address),
        password=_secret(r),
        folder=r.get("folder", str, MailboxConfig.folder),
        processed_folder=r.get("processed_folder", str, MailboxConfig.processed_folder),
        quarantine_folder=r.get("quarantine_folder", str, MailboxConfig.quarantine_folder),
        idle=r.get("idle", bool, MailboxConfig.idle),
    )
    r.done()
    return box


def _form(file: str, base: Path, table: dict[str, Any], i: int) -> FormConfig:
    r = _Reader(file, base, table, f"forms[{i}].")
    fields = FORM_FIELDS
    columns = r.table_of("columns")
    for key, value in columns.items():
        if key not in fields:
            raise ConfigError(
                file, f"forms[{i}].columns.{key}", f"unknown field (fields: {', '.join(fields)})"
            )
        if not isinstance(value, str):
            raise ConfigError(file, f"forms[{i}].columns.{key}", "expected a column header string")
    path = r.path("path", None)
    form = FormConfig(
        name=r.require("name", str),
        path=path if path is not None else base / DEFAULT_DATA_DIR / "forms",
        format=r.choice("format", ("auto", "csv", "json", "jsonl", "xlsx"), FormConfig.format),
        id_column=r.get("id_column", str, FormConfig.id_column),
        sheet=r.get("sheet", str, FormConfig.sheet),
        columns=dict(columns),
    )
    if "path" not in table:
        raise r.fail("path", "missing (required)")
    r.done()
    return form


def _smtp(file: str, base: Path, table: dict[str, Any]) -> SmtpConfig:
    r = _Reader(file, base, table, "smtp.")
    host = r.require("host", str)
    security = r.choice("security", ("tls", "starttls", "none"), SmtpConfig.security)
    if security == "none" and host not in ("localhost", "127.0.0.1", "::1"):
        raise r.fail("security", '"none" is only allowed for a loopback host')
    smtp = SmtpConfig(
        host=host,
        port=r.get("port", int, 465 if security == "tls" else 587),
        security=security,
        username=r.get("username", str, SmtpConfig.username),
        password=_secret(r),
        timeout=float(r.get("timeout", (int, float), SmtpConfig.timeout)),
    )
    r.done()
    return smtp


def _sla_policy(r: _Reader, base: SlaPolicy) -> SlaPolicy:
    return SlaPolicy(
        first_response=r.duration("first_response", base.first_response),
        acceptance=r.duration("acceptance", base.acceptance),
        resolution=r.duration("resolution", base.resolution),
    )


# The country codes `holidays` knows, read from its registry (the same set as its
# list_supported_countries(), which imports all of its 280 country modules to say so: 0.13 s of
# every command's start).
_CALENDARS = frozenset(
    name
    for names in holidays.registry.COUNTRIES.values()
    for name in names[1:]
    if name.isalpha() and name.isupper() and len(name) in (2, 3)
)


def _sla(file: str, base: Path, table: dict[str, Any]) -> SlaConfig:
    r = _Reader(file, base, table, "sla.")
    calendar = r.get("calendar", str, SlaConfig.calendar)
    if calendar not in _CALENDARS:
        raise r.fail("calendar", f"unknown holidays calendar {calendar!r}")
    default = _sla_policy(r, SlaPolicy())
    overrides: dict[str, SlaPolicy] = {}
    for priority in PRIORITIES:
        sub = r.table_of(priority)
        if sub:
            sr = _Reader(file, base, sub, f"sla.{priority}.")
            overrides[priority] = _sla_policy(sr, default)
            sr.done()
    sla = SlaConfig(
        calendar=calendar,
        default=default,
        survey_after=r.duration("survey_after", SlaConfig.survey_after),
        survey_close_after=r.duration("survey_close_after", SlaConfig.survey_close_after),
        by_priority=overrides,
        business_hours=r.convert("business_hours", SlaConfig.business_hours, _hours),
    )
    r.done()
    return sla


def _cron(text: str) -> str:
    CronTrigger.from_crontab(text)
    return text


def _escalation(file: str, base: Path, table: dict[str, Any]) -> EscalationConfig:
    r = _Reader(file, base, table, "escalation.")
    remind_at = float(r.get("remind_at", (int, float), EscalationConfig.remind_at))
    if not 0 < remind_at < 1:
        raise r.fail("remind_at", f"must be between 0 and 1, got {remind_at}")
    similarity = float(r.get("group_similarity", (int, float), EscalationConfig.group_similarity))
    if not 0 < similarity <= 1:
        raise r.fail("group_similarity", f"must be above 0 and at most 1, got {similarity}")
    esc = EscalationConfig(
        supervisors=r.addresses("supervisors"),
        urgent_notify=r.addresses("urgent_notify"),
        digest_cron=r.convert("digest_cron", EscalationConfig.digest_cron, _cron),
        remind_at=remind_at,
        level2_after=r.duration("level2_after", EscalationConfig.level2_after),
        trusted_authserv_ids=r.strings("trusted_authserv_ids"),
        group_threshold=_count(r, "group_threshold", EscalationConfig.group_threshold),
        group_window=r.duration("group_window", EscalationConfig.group_window),
        group_similarity=similarity,
        sweep_interval=r.duration("sweep_interval", EscalationConfig.sweep_interval),
        digest_when_empty=r.get("digest_when_empty", bool, EscalationConfig.digest_when_empty),
        assignment_fold=r.duration_or_off("assignment_fold", EscalationConfig.assignment_fold),
    )
    r.done()
    return esc


def _count(r: _Reader, name: str, default: int) -> int:
    value = r.get(name, int, default)
    if value < 0:
        raise r.fail(name, f"must be 0 (off) or more, got {value}")
    return value


def _positive_int(r: _Reader, name: str, default: int) -> int:
    value = r.get(name, int, default)
    if value <= 0:
        raise r.fail(name, f"must be a positive integer, got {value}")
    return value


def _intake(file: str, base: Path, table: dict[str, Any]) -> IntakeConfig:
    r = _Reader(file, base, table, "intake.")
    intake = IntakeConfig(
        ack_max_age=r.duration("ack_max_age", IntakeConfig.ack_max_age),
        max_message_size=r.convert("max_message_size", IntakeConfig.max_message_size, parse_size),
        max_attachment_size=r.convert(
            "max_attachment_size", IntakeConfig.max_attachment_size, parse_size
        ),
        auto_mail_per_address_per_hour=_positive_int(
            r, "auto_mail_per_address_per_hour", IntakeConfig.auto_mail_per_address_per_hour
        ),
        poll_interval=r.duration("poll_interval", IntakeConfig.poll_interval),
        batch_size=_positive_int(r, "batch_size", IntakeConfig.batch_size),
        message_time_budget=r.duration("message_time_budget", IntakeConfig.message_time_budget),
        prepare_aside=r.get("prepare_aside", bool, IntakeConfig.prepare_aside),
        new_cases_per_sender_per_day=_positive_int(
            r, "new_cases_per_sender_per_day", IntakeConfig.new_cases_per_sender_per_day
        ),
        acks_per_domain_per_hour=_count(
            r, "acks_per_domain_per_hour", IntakeConfig.acks_per_domain_per_hour
        ),
        public_mail_domains=tuple(d.lower().rstrip(".") for d in r.strings("public_mail_domains"))
        if "public_mail_domains" in r.table
        else IntakeConfig.public_mail_domains,
    )
    r.done()
    return intake


def _regulator(file: str, base: Path, table: dict[str, Any]) -> RegulatorConfig:
    r = _Reader(file, base, table, "regulator.")
    to = r.strings("to")
    for address in to:
        if "@" not in address.strip(" @"):
            raise r.fail("to", f"not an email address: {address!r}")
    amount = r.get("major_loss_amount", (int, float), RegulatorConfig.major_loss_amount)
    if amount <= 0:
        raise r.fail("major_loss_amount", f"must be a positive amount in CNY, got {amount}")
    regulator = RegulatorConfig(
        to=tuple(a.strip() for a in to),
        major_loss_amount=float(amount),
        contact=r.choice("contact", REGULATOR_CONTACT, RegulatorConfig.contact),
    )
    r.done()
    return regulator


def _hours(text: str) -> tuple[time, time]:
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
    if not match:
        raise ValueError(f'bad hours {text!r} (expected "09:00-21:00")')
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    try:
        start, end = time(h1, m1), time(h2 % 24, m2)
    except ValueError:
        raise ValueError(f"bad hours {text!r}") from None
    return start, end


def _delivery(file: str, base: Path, table: dict[str, Any]) -> DeliveryConfig:
    r = _Reader(file, base, table, "delivery.")
    delivery = DeliveryConfig(
        consumer_hours=r.convert("consumer_hours", DeliveryConfig.consumer_hours, _hours),
        interval=r.duration("interval", DeliveryConfig.interval),
    )
    r.done()
    return delivery


def _regex(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text, re.IGNORECASE)
    except re.error as exc:
        raise ValueError(f"bad regular expression {text!r}: {exc}") from None


_CATEGORY_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


def _classify(file: str, base: Path, table: dict[str, Any]) -> ClassifyConfig:
    r = _Reader(file, base, table, "classify.")
    renames = r.table_of("rename")
    for old, new in renames.items():
        if old not in CATEGORIES:
            raise r.fail(f"rename.{old}", f"not a built-in category ({', '.join(CATEGORIES)})")
        if not isinstance(new, str) or not _CATEGORY_NAME.fullmatch(new):
            raise r.fail(f"rename.{old}", f"must be a name of a-z, 0-9 and _, got {new!r}")
    classify = ClassifyConfig(
        rename=tuple(renames.items()),
        add=r.strings("add"),
        model=r.choice("model", ("auto", "off"), ClassifyConfig.model),
        confidence=float(r.get("confidence", (float, int), ClassifyConfig.confidence)),
        urgent_confidence=float(
            r.get("urgent_confidence", (float, int), ClassifyConfig.urgent_confidence)
        ),
    )
    for name in classify.add:
        if not _CATEGORY_NAME.fullmatch(name):
            raise r.fail("add", f"a category is a name of a-z, 0-9 and _, got {name!r}")
    names = classify.categories
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise r.fail("add" if name in classify.add else "rename", f"{name!r} is named twice")
    for key in ("confidence", "urgent_confidence"):
        if not 0.0 < getattr(classify, key) <= 1.0:
            raise r.fail(key, f"must be above 0 and at most 1, got {getattr(classify, key)}")
    r.done()
    return classify


def _rule(
    file: str, base: Path, table: dict[str, Any], i: int, categories: tuple[str, ...]
) -> ClassifyRule:
    r = _Reader(file, base, table, f"rules[{i}].")
    if "match" not in table:
        raise r.fail("match", "missing (required)")
    pattern = r.convert("match", re.compile(""), _regex)
    priority = r.get("priority", str, ClassifyRule.priority)
    if priority is not None and priority not in PRIORITIES:
        raise r.fail("priority", f"must be one of {', '.join(PRIORITIES)}, got {priority!r}")
    category = r.get("category", str, ClassifyRule.category)
    if category is not None and category not in categories:
        raise r.fail("category", f"must be one of {', '.join(categories)}, got {category!r}")
    reject_reason = r.get("reject_reason", str, ClassifyRule.reject_reason)
    r.done()
    return ClassifyRule(
        match=pattern, priority=priority, category=category, reject_reason=reject_reason
    )


def _essentials(r: _Reader) -> tuple[str, ...]:
    known = TicketsConfig.mail_essentials
    if "mail_essentials" not in r.table:
        r.seen.add("mail_essentials")
        return known
    values = r.strings("mail_essentials")
    for value in values:
        if value not in known:
            raise r.fail("mail_essentials", f"unknown essential {value!r} ({', '.join(known)})")
    return values


def _list_of_tables(r: _Reader, name: str) -> list[dict[str, Any]]:
    items = r.get(name, list, [])
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(r.file, f"{name}[{i}]", "expected a table ([[" + name + "]])")
    return items


def build(table: dict[str, Any], *, file: str, base: Path) -> Config:
    """Validate a parsed TOML document into a Config."""
    r = _Reader(file, base, table, "")
    data_dir = r.path("data_dir", (base / DEFAULT_DATA_DIR).resolve())
    assert data_dir is not None
    zone_name = r.get("timezone", str, DEFAULT_TIMEZONE)
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise r.fail("timezone", f"unknown time zone {zone_name!r}") from None

    db = _Reader(file, base, r.table_of("database"), "database.")
    url = db.get("url", str, f"sqlite:///{data_dir / 'caseloop.db'}")
    url = _resolve_sqlite_url(url, base)
    if not re.match(r"^(sqlite|postgresql)(\+\w+)?://", url):
        raise db.fail(
            "url",
            f"unsupported database URL {url.split(':')[0]!r} (sqlite:/// or postgresql+psycopg://)",
        )
    lease = db.duration("lease", Config.lease)
    if lease.working or not timedelta(seconds=3) <= lease.as_timedelta() <= timedelta(hours=1):
        raise db.fail("lease", f"{lease} is out of range (from 3s to 1h, calendar time)")
    db.done()

    mailbox_tables = _list_of_tables(r, "mailboxes")
    if "mailboxes" in table:
        mailboxes = tuple(
            _mailbox(file, base, data_dir, t, i) for i, t in enumerate(mailbox_tables)
        )
    else:
        mailboxes = (
            MailboxConfig(
                name="local",
                type="maildir",
                address="support@example.com",
                path=data_dir / "inbox",
                quarantine_path=data_dir / "quarantine",
            ),
        )
    names = [m.name for m in mailboxes]
    for i, name in enumerate(names):
        if names.index(name) != i:
            raise ConfigError(file, f"mailboxes[{i}].name", f"duplicate mailbox name {name!r}")

    forms = tuple(_form(file, base, t, i) for i, t in enumerate(_list_of_tables(r, "forms")))
    smtp_table = r.table_of("smtp")
    smtp = _smtp(file, base, smtp_table) if "smtp" in table else None

    tr = _Reader(file, base, r.table_of("tickets"), "tickets.")
    prefix = tr.get("number_prefix", str, TicketsConfig.number_prefix)
    if not re.fullmatch(r"[A-Z][A-Z0-9]{0,9}", prefix):
        raise tr.fail("number_prefix", f"must be 1-10 capital letters or digits, got {prefix!r}")
    tickets = TicketsConfig(
        number_prefix=prefix,
        default_language=tr.choice("default_language", LANGUAGES, TicketsConfig.default_language),
        notify_in_progress=tr.get("notify_in_progress", bool, TicketsConfig.notify_in_progress),
        mail_essentials=_essentials(tr),
    )
    tr.done()

    pr = _Reader(file, base, r.table_of("privacy"), "privacy.")
    privacy = PrivacyConfig(retain_closed=pr.duration("retain_closed", PrivacyConfig.retain_closed))
    pr.done()
    regulator = _regulator(file, base, r.table_of("regulator"))

    staff = []
    for i, t in enumerate(_list_of_tables(r, "staff")):
        sr = _Reader(file, base, t, f"staff[{i}].")
        staff.append(
            StaffMember(
                address=sr.address("address"),
                name=sr.get("name", str, StaffMember.name),
                groups=sr.strings("groups"),
                language=sr.choice("language", LANGUAGES, tickets.default_language),
            )
        )
        sr.done()
    classify = _classify(file, base, r.table_of("classify"))
    categories = classify.categories
    groups = {g for s in staff for g in s.groups}
    routing = []
    for i, t in enumerate(_list_of_tables(r, "routing")):
        rr = _Reader(file, base, t, f"routing[{i}].")
        category = rr.choice("category", categories, classify.desk_name("other"))
        group = rr.require("group", str)
        if group not in groups:
            raise rr.fail("group", f"no [[staff]] entry is in group {group!r}")
        routing.append(RoutingRule(category=category, group=group))
        rr.done()

    tpl = _Reader(file, base, r.table_of("templates"), "templates.")
    override_dir = tpl.path("override_dir", None)
    if override_dir is not None and not override_dir.is_dir():
        raise tpl.fail("override_dir", f"not a folder: {override_dir}")
    tpl.done()

    config = Config(
        source=file,
        base_dir=base,
        data_dir=data_dir,
        timezone=zone,
        database_url=url,
        lease=lease,
        mailboxes=mailboxes,
        forms=forms,
        smtp=smtp,
        tickets=tickets,
        sla=_sla(file, base, r.table_of("sla")),
        escalation=_escalation(file, base, r.table_of("escalation")),
        intake=_intake(file, base, r.table_of("intake")),
        delivery=_delivery(file, base, r.table_of("delivery")),
        privacy=privacy,
        regulator=regulator,
        staff=tuple(staff),
        routing=tuple(routing),
        rules=tuple(
            _rule(file, base, t, i, categories) for i, t in enumerate(_list_of_tables(r, "rules"))
        ),
        classify=classify,
        templates_override_dir=override_dir,
    )
    r.done()
    return config


def _resolve_sqlite_url(url: str, base: Path) -> str:
    """Relative SQLite paths resolve against the config's folder, like every other path."""
    match = re.match(r"^(sqlite(?:\+\w+)?:///)(?!/)(.+)$", url)
    if match and match.group(2) != ":memory:":
        return f"{match.group(1)}{(base / match.group(2)).resolve()}"
    return url


def find_config_path(explicit: str | None) -> Path | None:
    """SPEC §2: --config, else $CASELOOP_CONFIG, else ./caseloop.toml, else embedded defaults."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("CASELOOP_CONFIG")
    if env:
        return Path(env)
    local = Path("caseloop.toml")
    return local if local.is_file() else None


def load(path: Path | None) -> Config:
    """Load and validate the config file, or the embedded defaults when there is none."""
    if path is None:
        return build({}, file=EMBEDDED, base=Path.cwd())
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(name, "-", f"cannot read: {exc.strerror}") from None
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(name, "-", "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(name, "-", f"not valid TOML: {exc}") from None
    return build(table, file=name, base=path.resolve().parent)
