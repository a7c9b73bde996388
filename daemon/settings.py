"""The typed config: the dataclasses a caseloop.toml becomes, their defaults, and ConfigError.

This is the schema half of the config; daemon/config.py is the parsing half (TOML -> Config,
validation, `load`). The split runs this way round because every module reads the types while
only the CLI and the App load a file: `from daemon.config import Config` keeps working (config.py
re-exports every name here), and this module imports nothing of the parser, so there is no
import loop. The dataclass field defaults are the one truth about defaults: the parser reads
them (`MailboxConfig.folder`, ...) instead of repeating literals, and tests/test_config.py checks
that the template `caseloop init` writes (install.DEFAULT_CONFIG) loads to the same values.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from zoneinfo import ZoneInfo

from daemon.addresses import address_key
from daemon.clock import Duration, parse_duration

CATEGORIES = (
    "product_quality",
    "service_attitude",
    "logistics",
    "price",
    "after_sales",
    "false_advertising",
    "food_safety",
    "privacy",
    "other",
)
PRIORITIES = ("urgent", "high", "normal", "low")
CLASSIFY_MODEL_FILE = "classify-model.npz"  # in the data folder: `caseloop classify train`
LANGUAGES = ("zh-CN", "en")
DEFAULT_DATA_DIR = "caseloop-data"  # relative to the config file's folder
DEFAULT_TIMEZONE = "Asia/Shanghai"
# The fields a [[forms]] columns table may map an export's headers to.
FORM_FIELDS = (
    "email",
    "name",
    "phone",
    "respondent",
    "order_number",
    "purchase_date",
    "amount",
    "description",
    "demand",
    "subject",
    "submitted_at",  # when the consumer submitted it: older than ack_max_age, no ack
)


class ConfigError(Exception):
    """A config problem, already phrased for the operator: file, key, problem."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        super().__init__(f"{file}: {key}: {problem}")


@dataclass(frozen=True)
class Secret:
    """Where a password comes from; read only when a connection needs it."""

    file: Path | None = None
    env: str | None = None
    command: str | None = None

    def read(self) -> str | None:
        if self.file is not None:
            return self.file.read_text(encoding="utf-8").strip()
        if self.env is not None:
            return os.environ.get(self.env)
        if self.command is not None:
            out = subprocess.run(
                shlex.split(self.command), capture_output=True, text=True, timeout=30, check=True
            )
            return out.stdout.strip()
        return None


@dataclass(frozen=True)
class MailboxConfig:
    name: str
    type: str  # maildir | imap
    address: str
    aliases: tuple[str, ...] = ()
    path: Path | None = None
    quarantine_path: Path | None = None
    host: str | None = None
    port: int | None = None
    security: str = "tls"
    username: str | None = None
    password: Secret = Secret()
    folder: str = "INBOX"
    processed_folder: str = "caseloop/processed"
    quarantine_folder: str = "caseloop/quarantine"
    idle: bool = True


@dataclass(frozen=True)
class FormConfig:
    name: str
    path: Path
    format: str = "auto"
    id_column: str | None = None
    sheet: str | None = None
    columns: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    security: str = "starttls"
    username: str | None = None
    password: Secret = Secret()
    timeout: float = 30.0


@dataclass(frozen=True)
class TicketsConfig:
    number_prefix: str = "TS"
    default_language: str = "zh-CN"
    notify_in_progress: bool = False  # also mail the consumer when work on the case starts
    # Registration essentials (PROCEDURE §2) a complaint mail must give, else it waits for them.
    mail_essentials: tuple[str, ...] = ("name", "respondent", "purchase", "description")


@dataclass(frozen=True)
class SlaPolicy:
    first_response: Duration = parse_duration("24h")
    acceptance: Duration = parse_duration("3 working days")
    resolution: Duration = parse_duration("15 days")


@dataclass(frozen=True)
class SlaConfig:
    calendar: str = "CN"
    default: SlaPolicy = SlaPolicy()
    survey_after: Duration = parse_duration("24h")  # PROCEDURE §7: within 72h
    survey_close_after: Duration = parse_duration("7 days")
    by_priority: dict[str, SlaPolicy] = field(default_factory=dict)
    # Working hours of a working day (local time) for "working hours" durations; None: all day.
    business_hours: tuple[time, time] | None = None

    def policy(self, priority: str) -> SlaPolicy:
        return self.by_priority.get(priority, self.default)


@dataclass(frozen=True)
class EscalationConfig:
    supervisors: tuple[str, ...] = ()
    urgent_notify: tuple[str, ...] = ()
    digest_cron: str = "0 9 * * *"  # slots on days off (the [sla] calendar's) are skipped
    remind_at: float = 0.8
    level2_after: Duration = parse_duration("2 working days")
    trusted_authserv_ids: tuple[str, ...] = ()
    # A group complaint (群体性投诉): this many complainants against one respondent in the window,
    # telling of one incident: the words of their complaints this alike (Jaccard, handlers/group).
    group_threshold: int = 5
    group_window: Duration = parse_duration("7 days")
    group_similarity: float = 0.08
    sweep_interval: Duration = parse_duration("60s")  # how often SLA and survey clocks are checked
    digest_when_empty: bool = False  # send a digest even when nothing is overdue or waiting
    # Cases routed to one staff member within this long of their last assignment mail are
    # folded into one mail at its end ("0s": a mail per case). Assignments people make are
    # always mailed at once.
    assignment_fold: Duration = parse_duration("15 minutes")


# Mail providers anyone can sign up with: many complainants share them, so a burst of
# acknowledgements to one of them is no sign of abuse.
PUBLIC_MAIL_DOMAINS = (
    "qq.com",
    "foxmail.com",
    "163.com",
    "126.com",
    "yeah.net",
    "sina.com",
    "sina.cn",
    "sohu.com",
    "139.com",
    "189.cn",
    "wo.cn",
    "aliyun.com",
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "msn.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "proton.me",
    "protonmail.com",
    "gmx.com",
    "gmx.de",
    "web.de",
    "mail.ru",
    "yandex.ru",
)


@dataclass(frozen=True)
class IntakeConfig:
    ack_max_age: Duration = parse_duration("48h")
    max_message_size: int = 25 * 1000**2
    max_attachment_size: int = 20 * 1000**2
    auto_mail_per_address_per_hour: int = 5
    poll_interval: Duration = parse_duration("30s")
    batch_size: int = 200
    # One message's database-free steps (parse, classify, register) may take this long; one
    # over it is quarantined with the step it was in, and the batch goes on.
    message_time_budget: Duration = parse_duration("20s")
    # While a full batch is decided, prepare the next one (read ahead, not taken) in a worker
    # process (daemon/prepare.py): on by default where there is a second core to run it.
    prepare_aside: bool = (os.cpu_count() or 1) > 1
    # New cases one sender (plus-address and case folded) may open in a day; their mail beyond
    # it goes onto their latest case, unacknowledged (a robot answering every ack).
    new_cases_per_sender_per_day: int = 20
    # Acknowledgements to one private domain an hour (0: off): a catch-all domain cycling
    # addresses gets no more. Mail providers the public shares are exempt (their users are not
    # one), and so are the names reserved for examples and tests (RFC 2606), which no real
    # mail comes from.
    acks_per_domain_per_hour: int = 60
    public_mail_domains: tuple[str, ...] = PUBLIC_MAIL_DOMAINS


@dataclass(frozen=True)
class DeliveryConfig:
    consumer_hours: tuple[time, time] = (time(9), time(21))
    interval: Duration = parse_duration("10s")


REGULATOR_CONTACT = ("none", "name", "name_phone", "all")


@dataclass(frozen=True)
class RegulatorConfig:
    """PROCEDURE §4: a complaint of personal safety or major property loss is reported to the
    regulator at once. Off while `to` is empty."""

    to: tuple[str, ...] = ()
    major_loss_amount: float = 50_000.0  # CNY claimed; at or over it, a major loss
    # How much of the complainant the report names: none | name | name_phone | all (+ email)
    contact: str = "none"


@dataclass(frozen=True)
class PrivacyConfig:
    retain_closed: Duration = parse_duration("3 years")


@dataclass(frozen=True)
class StaffMember:
    address: str
    name: str = ""
    groups: tuple[str, ...] = ()
    language: str = "zh-CN"  # of the mail we send them; default: [tickets] default_language


@dataclass(frozen=True)
class RoutingRule:
    category: str
    group: str


@dataclass(frozen=True)
class ClassifyRule:
    match: re.Pattern[str]
    priority: str | None = None
    category: str | None = None
    reject_reason: str | None = None  # suggested to staff (never applied): out of scope, why


@dataclass(frozen=True)
class ClassifyConfig:
    """[classify]: the desk's categories and its learned model (handlers/textmodel.py)."""

    # The nine built-in categories, renamed ((built-in, the desk's name) pairs: the built-in
    # rules then give the desk's name) and added to (assigned by [[rules]], staff or the model).
    rename: tuple[tuple[str, str], ...] = ()
    add: tuple[str, ...] = ()
    # "auto": the model `caseloop classify train` wrote to the data folder, when there is one;
    # "off": rules only. The model decides a category or a priority only when its probability
    # reaches `confidence`; the safety and group rules make a case urgent whatever it says.
    model: str = "auto"
    confidence: float = 0.6
    # Raising a case to urgent on the model's word alone asks more: a false alarm costs the
    # supervisors' attention, and the safety words catch harm whatever the model says.
    urgent_confidence: float = 0.9

    def priority_confidence(self, priority: str) -> float:
        return self.urgent_confidence if priority == "urgent" else self.confidence

    @property
    def categories(self) -> tuple[str, ...]:
        renamed = dict(self.rename)
        return tuple(renamed.get(c, c) for c in CATEGORIES) + self.add

    def desk_name(self, builtin: str) -> str:
        """The desk's name for a built-in category."""
        for old, new in self.rename:
            if old == builtin:
                return new
        return builtin


@dataclass(frozen=True)
class Config:
    source: str  # the file it came from, or EMBEDDED
    base_dir: Path
    data_dir: Path
    timezone: ZoneInfo
    database_url: str
    mailboxes: tuple[MailboxConfig, ...]
    forms: tuple[FormConfig, ...] = ()
    smtp: SmtpConfig | None = None
    tickets: TicketsConfig = TicketsConfig()
    sla: SlaConfig = SlaConfig()
    escalation: EscalationConfig = EscalationConfig()
    intake: IntakeConfig = IntakeConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    regulator: RegulatorConfig = RegulatorConfig()
    staff: tuple[StaffMember, ...] = ()
    routing: tuple[RoutingRule, ...] = ()
    rules: tuple[ClassifyRule, ...] = ()
    classify: ClassifyConfig = ClassifyConfig()
    templates_override_dir: Path | None = None
    # [database] lease: how long an instance's hold on a mailbox, form folder or job outlives
    # its last heartbeat (daemon/store/coordination.py): a dead instance's mailboxes are taken
    # over within about this long.
    lease: Duration = parse_duration("20s")

    @property
    def categories(self) -> tuple[str, ...]:
        """The desk's categories: the built-in ones as [classify] renames and adds to them."""
        return self.classify.categories

    @property
    def support_address(self) -> str:
        """The address our mail comes from: the first mailbox's."""
        return self.mailboxes[0].address if self.mailboxes else "support@localhost"

    @property
    def own_addresses(self) -> frozenset[str]:
        """Every address that is us: mailbox addresses and aliases, lower-cased."""
        found = {
            self.support_address,
            *(a for b in self.mailboxes for a in (b.address, *b.aliases)),
        }
        return frozenset({a.lower() for a in found} | {address_key(a) for a in found})

    def staff_member(self, address: str) -> StaffMember | None:
        """The [[staff]] entry for an address (any case), or None."""
        wanted = address.strip().lower()
        return next((s for s in self.staff if s.address.lower() == wanted), None)

    def language_of(self, address: str) -> str:
        """The language mail to a staff member or supervisor is written in."""
        member = self.staff_member(address)
        return member.language if member is not None else self.tickets.default_language

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def blobs_dir(self) -> Path:
        """Raw mail and attachments, content-addressed by sha256."""
        return self.data_dir / "blobs"
