"""`caseloop init`: a commented config and its data folders; with --system, the layout the
systemd unit runs with (every path absolute under the state folder, owners and modes).

The unit (systemd/caseloop.service) runs as an unprivileged user with ProtectSystem=strict: it
reads /etc/caseloop and may write only /var/lib/caseloop. A config written by plain `init`
holds paths relative to its own folder, which would put the database and the Maildirs in
/etc/caseloop; `init --system` writes them absolute, and gives each folder its owner.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import format_datetime
from pathlib import Path

from sqlalchemy import make_url

from daemon import config as configmod
from daemon.clock import SystemClock
from daemon.config import Config
from daemon.maildirs import deliver_to_maildir, ensure_maildir
from daemon.resources import shipped_dir

DEFAULT_CONFIG = """\
# caseloop configuration (SPEC §3). Relative paths resolve against this file's folder.
data_dir = "caseloop-data"        # attachments, raw mail, the outbox Maildir (when no [smtp])
timezone = "Asia/Shanghai"        # local dates for case numbers, SLA days, templates

[database]
url = "sqlite:///caseloop-data/caseloop.db"   # or postgresql+psycopg://user@host/db
# lease = "20s"                   # several instances (PostgreSQL): see README "Several instances"

[[mailboxes]]                     # the embedded default: a local Maildir
name = "local"
type = "maildir"
address = "support@example.com"   # our address: From of our mail, never answered
path = "caseloop-data/inbox"      # new/ is read; processed mail moves to cur/ after commit
quarantine_path = "caseloop-data/quarantine"

# [smtp]                          # absent: mail is written to caseloop-data/outbox (Maildir)
# host = "smtp.example.com"
# port = 587
# security = "starttls"           # tls | starttls | none (none only for loopback)
# username = "support@example.com"
# password_file = "/run/credentials/caseloop.service/smtp"

[tickets]
number_prefix = "TS"              # TS-20261124-0007
default_language = "zh-CN"        # zh-CN | en; per case from the consumer's own text
# A complaint mail lacking one of these waits for it (one request mail, SLA clocks paused):
mail_essentials = ["name", "respondent", "purchase", "description"]
notify_in_progress = false        # also mail the consumer when work on an accepted case starts

[sla]                             # durations: "24h", "3 working days", "15 days"
calendar = "CN"                   # public holidays and make-up workdays
first_response = "24h"
acceptance = "3 working days"
resolution = "15 days"
survey_after = "24h"              # the follow-up comes within 72h of the resolution
survey_close_after = "7 days"

[escalation]
supervisors = []                  # e.g. ["lead@example.com"]: escalations, appeals, the digest
urgent_notify = []                # e.g. ["compliance@example.com"]: urgent cases, at once
digest_cron = "0 9 * * *"         # skipped on days off: holidays yes, make-up workdays no
remind_at = 0.8                   # remind the assignee at this share of a deadline
level2_after = "2 working days"   # escalate again this long after a breach
trusted_authserv_ids = []         # e.g. ["mx.example.com"]: its DKIM passes prove staff mail
group_threshold = 5               # this many complainants against one respondent (0: off) ...
group_window = "7 days"           # ... within this window make a group complaint (urgent) ...
group_similarity = 0.08           # ... when their complaints' words are this alike (one incident)

# [[staff]]                       # who handles cases; they act by replying to our mail
# address = "agent@example.com"
# name = "Agent Wang"
# groups = ["quality"]
# language = "zh-CN"              # of the mail they get

# [[routing]]                     # category -> staff group; first match wins, least loaded
# category = "product_quality"
# group = "quality"

# [[rules]]                       # classification before the built-in rules; first match wins
# match = "(漏电|触电)"
# priority = "urgent"
# category = "product_quality"
# reject_reason = "b2b"           # a hint shown to staff, never applied

[intake]
ack_max_age = "48h"               # older mail is registered without an acknowledgement
max_message_size = "25MB"         # larger mail is quarantined
max_attachment_size = "20MB"
auto_mail_per_address_per_hour = 5
poll_interval = "30s"             # how often `caseloop run` polls each source

[privacy]                         # PIPL; `caseloop privacy export|erase EMAIL` on request
retain_closed = "3 years"         # then a closed or rejected case's personal data is erased

[regulator]                       # PROCEDURE §4: safety or a major loss is reported at once
to = []                           # e.g. ["12315@amr.example.gov.cn"]; empty: off
major_loss_amount = 50000         # CNY claimed; at or over it, a major property loss
contact = "none"                  # the complainant in the report: none|name|name_phone|all

[classify]                        # the desk's categories and its learned model
add = []                          # categories of your own, e.g. ["telecom"]: set by [[rules]],
                                  # staff (tickets set --category, #category) or the model
rename = {}                       # e.g. { logistics = "delivery" }: the built-in rules then say so
model = "auto"                    # `caseloop classify train` writes one from staff's labels; "off"
confidence = 0.6                  # the model decides only at or above this probability
urgent_confidence = 0.9           # and raises a case to urgent only at or above this one
"""


class InitRefused(Exception):
    """What init was asked cannot be done (the message says why): exit 2."""


def arrived_now(raw: bytes) -> bytes:
    """A sample dated now, so it reads as fresh mail (older mail gets no acknowledgement)."""
    head, sep, body = (
        raw.partition(b"\n\n") if b"\r\n\r\n" not in raw else raw.partition(b"\r\n\r\n")
    )
    date = format_datetime(SystemClock().now()).encode()
    head = re.sub(rb"(?mi)^Date:[^\r\n]*", b"Date: " + date, head, count=1)
    return head + sep + body


@dataclass(frozen=True)
class SystemLayout:
    """Where the unit finds things and whose they are: the config folder is root's, readable by
    the service's group (0750, the config 0640 in it); the state folder and everything in it
    belong to the service user (0750, files made under UMask=0027 like the unit's)."""

    config_dir: Path = Path("/etc/caseloop")
    data_dir: Path = Path("/var/lib/caseloop")
    user: str = "caseloop"

    def account(self) -> pwd.struct_passwd:
        """The service user, checked before anything is made."""
        if os.geteuid() != 0:
            raise InitRefused("init --system gives folders to the service user: run it as root")
        if not self.config_dir.is_absolute() or not self.data_dir.is_absolute():
            raise InitRefused("init --system takes absolute folders")
        try:
            return pwd.getpwnam(self.user)
        except KeyError:
            raise InitRefused(
                f"no user {self.user!r}: create it first (useradd --system --user-group "
                f"--home-dir {self.data_dir} --shell /usr/sbin/nologin {self.user})"
            ) from None

    def config_text(self) -> str:
        """The commented template with every data path absolute under data_dir."""
        text = DEFAULT_CONFIG.replace("sqlite:///caseloop-data", f"sqlite:///{self.data_dir}")
        text = text.replace("caseloop-data", str(self.data_dir))
        header = (
            f"# Written by `caseloop init --system` for systemd/caseloop.service, which runs as\n"
            f"# {self.user} and may write only under {self.data_dir}: keep every path there.\n"
        )
        return header + text

    def outside(self, config: Config) -> list[str]:
        """The paths caseloop writes that lie outside data_dir (read-only to the unit)."""
        written: list[tuple[str, Path | None]] = [("data_dir", config.data_dir)]
        if config.database_url.startswith("sqlite"):
            database = make_url(config.database_url).database
            written.append(("database.url", Path(database) if database else None))
        for i, box in enumerate(config.mailboxes):
            written += [(f"mailboxes[{i}].path", box.path)]
            written += [(f"mailboxes[{i}].quarantine_path", box.quarantine_path)]
        written += [(f"forms[{i}].path", form.path) for i, form in enumerate(config.forms)]
        return [
            f"{key} = {path}"
            for key, path in written
            if path is not None and not path.resolve().is_relative_to(self.data_dir.resolve())
        ]

    def settle(self, config_path: Path, account: pwd.struct_passwd) -> None:
        """Owners and modes: the config root's and the group's to read, the state the user's."""
        uid, gid = account.pw_uid, account.pw_gid
        for path, mode in ((self.config_dir, 0o750), (config_path, 0o640)):
            os.chown(path, 0, gid)
            os.chmod(path, mode)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o750)
        for folder, dirs, files in os.walk(self.data_dir):
            for name in [".", *dirs, *files]:
                os.chown(os.path.join(folder, name), uid, gid, follow_symlinks=False)
        group = grp.getgrgid(gid).gr_name
        print(f"{self.config_dir}: root:{group} 0750, {config_path.name} 0640 in it")
        print(f"{self.data_dir}: {self.user}:{group} 0750, and everything in it theirs")


@contextmanager
def _umask(mask: int | None) -> Iterator[None]:
    if mask is None:
        yield
        return
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def initialize(target: Path, *, with_samples: bool, system: SystemLayout | None) -> None:
    """Write the config unless there is one, make its data folders (and with `system`, give
    them their owners and modes), and optionally drop the sample complaints into the inbox."""
    account = system.account() if system else None
    target = target.resolve()
    with _umask(0o027 if system else None):
        target.mkdir(parents=True, exist_ok=True)
        config_path = target / "caseloop.toml"
        if config_path.exists():
            print(f"{config_path} exists; leaving it as it is")
        else:
            config_path.write_text(
                system.config_text() if system else DEFAULT_CONFIG, encoding="utf-8"
            )
            print(f"wrote {config_path}")
        config = configmod.load(config_path)
        if system and system.outside(config):
            raise InitRefused(
                f"{config_path}: " + "; ".join(system.outside(config)) + f": outside "
                f"{system.data_dir}, read-only to the unit (ProtectSystem=strict): move them "
                "there, or add them to the unit's ReadWritePaths= and set the owners yourself"
            )
        for box in config.mailboxes:
            if box.type == "maildir":
                assert box.path is not None and box.quarantine_path is not None
                ensure_maildir(box.path)
                ensure_maildir(box.quarantine_path)
        if config.smtp is None:
            ensure_maildir(config.outbox_dir)
        print(f"data folders ready under {config.data_dir}")
        if with_samples:
            inbox = next((b.path for b in config.mailboxes if b.type == "maildir"), None)
            if inbox is None:
                raise InitRefused("--with-samples needs a maildir mailbox")
            samples = sorted(shipped_dir("samples").glob("*.eml"))
            for sample in samples:
                raw = arrived_now(sample.read_bytes())
                deliver_to_maildir(inbox, raw, name=f"{sample.stem}.sample")
            print(f"copied {len(samples)} sample complaints into {inbox / 'new'}")
        if system and account:
            system.settle(config_path, account)
