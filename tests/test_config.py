"""Config: every SPEC §3 key parses; every mistake names the file, the key and the problem."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from daemon import config as configmod
from daemon.cli import main
from daemon.config import (
    ClassifyConfig,
    ConfigError,
    EscalationConfig,
    IntakeConfig,
    PrivacyConfig,
    RegulatorConfig,
    SlaConfig,
    SlaPolicy,
    TicketsConfig,
)
from daemon.install import DEFAULT_CONFIG

FULL_SPEC_CONFIG = """
data_dir = "caseloop-data"
timezone = "Asia/Shanghai"

[database]
url = "sqlite:///caseloop-data/caseloop.db"

[[mailboxes]]
name = "local"
type = "maildir"
address = "support@example.com"
path = "caseloop-data/inbox"
quarantine_path = "caseloop-data/quarantine"

[[mailboxes]]
name = "support"
type = "imap"
address = "support@example.com"
aliases = ["complaints@example.com"]
host = "imap.example.com"
port = 993
security = "tls"
username = "support@example.com"
password_file = "imap.secret"
folder = "INBOX"
processed_folder = "caseloop/processed"
quarantine_folder = "caseloop/quarantine"
idle = true

[[forms]]
name = "web"
path = "caseloop-data/forms/web"
format = "auto"
id_column = "提交编号"
[forms.columns]
email = "邮箱"
name = "姓名"
description = "投诉内容"

[smtp]
host = "smtp.example.com"
port = 587
security = "starttls"
username = "support@example.com"
password_file = "smtp.secret"

[tickets]
number_prefix = "TS"
default_language = "zh-CN"

[sla]
calendar = "CN"
first_response = "24h"
acceptance = "3 working days"
resolution = "15 days"
survey_after = "72h"
survey_close_after = "7 days"

[sla.urgent]
first_response = "2h"
resolution = "3 days"

[escalation]
supervisors = ["lead@example.com"]
urgent_notify = ["compliance@example.com"]
digest_cron = "0 9 * * mon-fri"
remind_at = 0.8
level2_after = "2 working days"
trusted_authserv_ids = ["mx.example.com"]

[intake]
ack_max_age = "48h"
max_message_size = "25MB"
max_attachment_size = "20MB"
auto_mail_per_address_per_hour = 5

[delivery]
consumer_hours = "09:00-21:00"

[privacy]
retain_closed = "3 years"

[[staff]]
address = "agent@example.com"
name = "Agent Wang"
groups = ["quality"]

[[routing]]
category = "product_quality"
group = "quality"

[[rules]]
match = "(爆炸|起火|触电|烫伤|受伤|中毒|过敏|explod|fire|injur|burn)"
priority = "urgent"
category = "product_quality"
"""


def _write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "imap.secret").write_text("pw\n")
    (tmp_path / "smtp.secret").write_text("pw\n")
    path = tmp_path / "caseloop.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_every_spec_key_parses_into_typed_values(tmp_path: Path) -> None:
    config = configmod.load(_write(tmp_path, FULL_SPEC_CONFIG))
    assert config.data_dir == (tmp_path / "caseloop-data").resolve()
    assert config.database_url == f"sqlite:///{(tmp_path / 'caseloop-data/caseloop.db').resolve()}"
    imap = config.mailboxes[1]
    assert (imap.type, imap.port, imap.security, imap.idle) == ("imap", 993, "tls", True)
    assert imap.password.read() == "pw"
    assert config.own_addresses == {"support@example.com", "complaints@example.com"}
    assert config.forms[0].columns["email"] == "邮箱"
    assert config.sla.default.acceptance.working and config.sla.default.acceptance.amount == 3
    assert str(config.sla.policy("urgent").first_response) == "2 hours"
    assert config.sla.policy("urgent").acceptance == config.sla.default.acceptance
    assert config.intake.max_message_size == 25_000_000
    assert config.delivery.consumer_hours[0].hour == 9
    assert config.escalation.remind_at == 0.8
    assert config.routing[0].group == "quality"
    assert config.rules[0].match.search("高压锅爆炸了")


def test_no_file_means_embedded_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CASELOOP_CONFIG", raising=False)
    config = configmod.load(configmod.find_config_path(None))
    assert config.source == configmod.EMBEDDED
    assert config.mailboxes[0].path == tmp_path / "caseloop-data" / "inbox"
    assert config.smtp is None and config.database_url.startswith("sqlite:///")


def _field_default(cls: type, name: str) -> Any:
    (found,) = (f for f in dataclasses.fields(cls) if f.name == name)
    if found.default is not dataclasses.MISSING:
        return found.default
    assert found.default_factory is not dataclasses.MISSING, f"{cls.__name__}.{name}: no default"
    return found.default_factory()


def test_the_init_template_says_the_dataclass_defaults(tmp_path: Path) -> None:
    """The TOML `caseloop init` writes spells the defaults out for the operator: every key it
    sets loads to its dataclass field's default, and the whole file to the embedded defaults,
    so the template cannot drift from the one truth (the dataclasses in daemon/settings.py)."""
    sections: dict[str, type] = {
        "tickets": TicketsConfig,
        "sla": SlaConfig,
        "escalation": EscalationConfig,
        "intake": IntakeConfig,
        "privacy": PrivacyConfig,
        "regulator": RegulatorConfig,
        "classify": ClassifyConfig,
    }
    policy_keys = {f.name for f in dataclasses.fields(SlaPolicy)}
    path = tmp_path / "caseloop.toml"
    path.write_text(DEFAULT_CONFIG, encoding="utf-8")
    config = configmod.load(path)
    template = tomllib.loads(DEFAULT_CONFIG)
    assert set(template) == {*sections, "data_dir", "timezone", "database", "mailboxes"}
    for section, cls in sections.items():
        for key in template[section]:
            if section == "sla" and key in policy_keys:
                loaded, default = getattr(config.sla.default, key), getattr(SlaPolicy(), key)
            else:
                loaded, default = getattr(getattr(config, section), key), _field_default(cls, key)
            assert loaded == default, f"[{section}] {key}: template {loaded!r}, default {default!r}"
    embedded = configmod.build({}, file=configmod.EMBEDDED, base=tmp_path)
    assert dataclasses.replace(config, source=configmod.EMBEDDED) == embedded


@pytest.mark.parametrize("calendar", ["CN", "CHN", "US", "DE"])
def test_a_calendar_is_known_without_importing_every_country(tmp_path: Path, calendar: str) -> None:
    """`holidays` can list its countries only by importing all of them (0.13 s of every
    command's start); the config reads its registry instead, and imports none."""
    path = _write(tmp_path, f'[sla]\ncalendar = "{calendar}"\n')
    code = (
        "import sys, pathlib; from daemon import config; "
        "c = config.load(pathlib.Path(sys.argv[1])); "
        "print(c.sla.calendar, sum(m.startswith('holidays.countries.') for m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == [calendar, "0"], done.stdout


@pytest.mark.parametrize(
    ("body", "key", "problem"),
    [
        ('[tickets]\nnumber_prefx = "TS"\n', "tickets.number_prefx", "unknown key"),
        ('[sla]\nacceptance = "3 workin days"\n', "sla.acceptance", "bad duration"),
        ('[sla]\nfirst_response = "soon"\n', "sla.first_response", "bad duration"),
        ("[sla]\nfirst_response = 24\n", "sla.first_response", "expected a string"),
        ('timezone = "Mars/Olympus"\n', "timezone", "unknown time zone"),
        ('[sla]\ncalendar = "XX"\n', "sla.calendar", "unknown holidays calendar"),
        ('[sla]\ncalendar = "cn"\n', "sla.calendar", "unknown holidays calendar"),
        ('[intake]\nmax_message_size = "lots"\n', "intake.max_message_size", "bad size"),
        ('[escalation]\ndigest_cron = "every day"\n', "escalation.digest_cron", ""),
        (
            '[escalation]\nsupervisors = ["not an address"]\n',
            "escalation.supervisors",
            "not an email address",
        ),
        (
            '[[mailboxes]]\nname = "x"\ntype = "imap"\naddress = "a@example.com"\n'
            'host = "imap.example.com"\npassword_file = "nope.secret"\n',
            "mailboxes[0].password_file",
            "missing password file",
        ),
        (
            '[[mailboxes]]\nname = "x"\ntype = "pop3"\naddress = "a@example.com"\n',
            "mailboxes[0].type",
            "must be one of",
        ),
        (
            '[[mailboxes]]\nname = "x"\ntype = "imap"\naddress = "a@example.com"\n'
            'host = "imap.example.com"\nsecurity = "none"\n',
            "mailboxes[0].security",
            "loopback",
        ),
        ('[[rules]]\nmatch = "(unclosed"\n', "rules[0].match", "bad regular expression"),
        (
            '[[routing]]\ncategory = "logistics"\ngroup = "ghosts"\n',
            "routing[0].group",
            "no [[staff]]",
        ),
        ('[database]\nurl = "mysql://x"\n', "database.url", "unsupported database"),
        ("[smtp]\nport = 25\n", "smtp.host", "missing"),
    ],
)
def test_bad_config_names_file_key_and_problem(
    tmp_path: Path, body: str, key: str, problem: str
) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        configmod.load(path)
    assert err.value.file == str(path)
    assert err.value.key == key
    assert problem in err.value.problem


def test_check_config_exits_2_naming_the_key_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, '[sla]\nresolutoin = "15 days"\n')
    assert main(["--config", str(path), "check-config"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: sla.resolutoin: unknown key" in err
    assert "Traceback" not in err


def test_invalid_toml_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, "[sla\n")
    assert main(["--config", str(path), "check-config"]) == 2
    assert "not valid TOML" in capsys.readouterr().err


def test_init_writes_a_config_that_loads_and_check_config_reports_each_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path / "site")]) == 0
    path = tmp_path / "site" / "caseloop.toml"
    assert "#" in path.read_text()  # commented for the operator
    assert (tmp_path / "site/caseloop-data/inbox/new").is_dir()
    capsys.readouterr()
    assert main(["--config", str(path), "check-config"]) == 0
    out = capsys.readouterr().out
    assert "source local: maildir" in out and "ok" in out
