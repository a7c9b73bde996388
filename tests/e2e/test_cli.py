"""The `caseloop` command as an operator and staff use it, in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run_caseloop as caseloop

DATA = Path(__file__).parent.parent / "data"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    caseloop("init", str(tmp_path), "--with-samples", cwd=tmp_path)
    return tmp_path


def received_case(site: Path) -> str:
    """The newest case that is complete and awaits a decision."""
    listing = json.loads(caseloop("tickets", "list", "--json", cwd=site).stdout)
    return str(next(c["number"] for c in listing if c["status"] == "received"))


@pytest.mark.slow
def test_samples_run_end_to_end_and_a_second_run_changes_nothing(site: Path) -> None:
    first = caseloop("run", "--once", cwd=site)
    assert "cases opened: 4" in first.stdout
    assert "mails delivered: 4" in first.stdout
    assert "quarantined: local/06-malformed-no-from.sample" in first.stdout
    assert "ignored: local/05-auto-reply.sample" in first.stdout

    listing = json.loads(caseloop("tickets", "list", "--json", cwd=site).stdout)
    assert len(listing) == 4
    assert all("timeline" not in case for case in listing)
    languages = sorted(case["language"] for case in listing)
    assert languages == ["en", "zh-CN", "zh-CN", "zh-CN"]
    kinds = sorted(
        m["kind"] for m in json.loads(caseloop("outbox", "list", "--json", cwd=site).stdout)
    )
    assert kinds == ["ack", "ack", "request_info", "request_info"]

    second = caseloop("run", "--once", cwd=site)
    assert "cases opened: 0" in second.stdout and "mails delivered: 0" in second.stdout
    assert len(json.loads(caseloop("tickets", "list", "--json", cwd=site).stdout)) == 4
    assert len(list((site / "caseloop-data/outbox/new").iterdir())) == 4


def test_show_json_follows_the_spec_shape(site: Path) -> None:
    caseloop("run", "--once", cwd=site)
    number = received_case(site)
    case = json.loads(caseloop("tickets", "show", number, "--json", cwd=site).stdout)
    expected = {
        "number",
        "status",
        "channel",
        "category",
        "priority",
        "language",
        "subject",
        "complainant",
        "respondent",
        "assignee",
        "escalation_level",
        "created_at",
        "acknowledged_at",
        "first_response_at",
        "accepted_at",
        "resolved_at",
        "closed_at",
        "reopened_count",
        "due",
        "satisfaction",
        "timeline",
    }
    assert expected <= set(case)
    assert set(case["due"]) == {"first_response", "acceptance", "resolution"}
    assert [e["kind"] for e in case["timeline"]][:2] == ["message_in", "message_out"]
    assert case["status"] == "received" and case["channel"] == "email"


@pytest.mark.slow
def test_staff_reply_set_and_note_from_the_cli(site: Path) -> None:
    with (site / "caseloop.toml").open("a", encoding="utf-8") as config:
        config.write('\n[[staff]]\naddress = "agent@example.com"\ngroups = ["quality"]\n')
    caseloop("run", "--once", cwd=site)
    number = received_case(site)
    caseloop(
        "tickets",
        "set",
        number,
        "--status",
        "accepted",
        "--assignee",
        "agent@example.com",
        "--reason",
        "in scope",
        cwd=site,
    )
    caseloop(
        "tickets",
        "reply",
        number,
        "--message",
        "We are checking your order.",
        "--status",
        "in_progress",
        cwd=site,
    )
    caseloop("tickets", "note", number, "--message", "called the courier", cwd=site)
    refused = caseloop("tickets", "set", number, "--status", "closed", cwd=site, check=False)
    assert refused.returncode == 2 and "cannot go from in_progress to closed" in refused.stderr

    case = json.loads(caseloop("tickets", "show", number, "--json", cwd=site).stdout)
    assert case["status"] == "in_progress" and case["assignee"] == "agent@example.com"
    assert case["accepted_at"] and case["first_response_at"] and case["due"]["resolution"]
    kinds = [e["kind"] for e in case["timeline"]]
    assert kinds.count("status") == 2 and kinds.count("note") == 2
    caseloop("run", "--once", cwd=site)
    outbox = json.loads(caseloop("outbox", "list", "--json", cwd=site).stdout)
    mine = [m for m in outbox if m["subject"].startswith(f"[{number}]")]
    assert sorted(m["kind"] for m in mine) == ["accepted", "ack", "assigned", "reply"]
    (assigned,) = [m for m in mine if m["kind"] == "assigned"]
    assert assigned["recipient"] == "agent@example.com"
    assert {m["status"] for m in mine} == {"sent"}


def test_unknown_case_exits_2(site: Path) -> None:
    result = caseloop("tickets", "show", "TS-20000101-0001", cwd=site, check=False)
    assert result.returncode == 2 and "no case" in result.stderr


def test_status_reports_sources_outbox_and_cases(site: Path) -> None:
    caseloop("run", "--once", cwd=site)
    report = json.loads(caseloop("status", "--json", cwd=site).stdout)
    (local,) = report["sources"]
    assert local["name"] == "local" and local["last_poll_at"] and local["backlog"] == 0
    assert report["outbox"] == {"queued": 0, "failed": 0, "sent": 4}
    # two samples name no business they complain about: they wait for that detail
    assert report["cases"]["open"] == 4
    assert report["cases"]["by_status"] == {"received": 2, "waiting": 2}
    assert report["cases"]["urgent"] == 1  # the exploded pressure cooker
    assert report["next"]["digest"] and report["next"]["sla_step"]
    assert local["stalled"] is False and local["failing"] is False and local["lag_seconds"] >= 0
    text = caseloop("status", cwd=site).stdout
    assert "source local: ok" in text and "4 open" in text


def test_status_reads_the_database_and_never_waits_on_a_silent_mail_server(
    tmp_path: Path,
) -> None:
    """A server that accepts the connection and never says a word (frozen, SIGSTOP-like):
    status answers at once from what the daemon recorded."""
    import socket
    import time

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # connections complete in the kernel; nobody ever answers
    try:
        (tmp_path / "pw").write_text("secret")
        config = tmp_path / "caseloop.toml"
        config.write_text(
            'data_dir = "data"\n[[mailboxes]]\nname = "frozen"\ntype = "imap"\n'
            'address = "support@example.com"\nhost = "127.0.0.1"\n'
            f'port = {silent.getsockname()[1]}\nsecurity = "none"\nusername = "support"\n'
            'password_file = "pw"\n'
        )
        caseloop("migrate", config=config, cwd=tmp_path)
        started = time.monotonic()
        report = json.loads(caseloop("status", "--json", config=config, cwd=tmp_path).stdout)
        assert time.monotonic() - started < 10  # an IMAP client would wait 60 s for a greeting
    finally:
        silent.close()
    (frozen,) = report["sources"]
    assert frozen["name"] == "frozen" and frozen["last_poll_at"] is None
    assert frozen["backlog"] is None and frozen["stalled"] is False


def test_check_config_creates_nothing_and_fails_on_a_missing_folder(tmp_path: Path) -> None:
    config = tmp_path / "caseloop.toml"
    config.write_text(
        'data_dir = "data"\n[[mailboxes]]\nname = "support"\ntype = "maildir"\n'
        'address = "support@example.com"\npath = "data/inbx"\n'  # a typo of data/inbox
    )
    done = caseloop("check-config", config=config, cwd=tmp_path, check=False)
    assert done.returncode == 1
    assert f"source support: maildir {tmp_path / 'data/inbx'}: FAILED: no Maildir" in done.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["caseloop.toml"]  # nothing made

    config.write_text('data_dir = "/proc/nope"\n')
    done = caseloop("check-config", config=config, cwd=tmp_path, check=False)
    assert done.returncode == 1 and "data_dir: /proc/nope: FAILED" in done.stdout
    done = caseloop("run", "--once", config=config, cwd=tmp_path, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "config error" in done.stderr and "/proc/nope cannot be created" in done.stderr


def test_a_command_in_a_folder_without_caseloop_data_says_so_and_creates_nothing(
    tmp_path: Path,
) -> None:
    for command in (["tickets", "list"], ["status"], ["outbox", "list"]):
        done = caseloop(*command, cwd=tmp_path, check=False)
        assert done.returncode == 2, command
        assert "no caseloop data here" in done.stderr and "does not exist" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_command_line_says_what_it_is_and_lists_with_headers(site: Path) -> None:
    import getpass

    assert caseloop("--version", cwd=site).stdout.startswith("caseloop ")
    caseloop("run", "--once", cwd=site)
    # global options after the subcommand too; a listing with a header and the assignee
    listing = caseloop("tickets", "list", "--limit", "2", "--log-level", "WARNING", cwd=site)
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:2] == ["NUMBER", "STATUS"] and "ASSIGNEE" in lines[0]
    assert len(lines) == 4 and "more cases than --limit 2" in lines[-1]
    number = received_case(site)
    caseloop("tickets", "note", number, "--message", "called the shop", cwd=site)
    case = json.loads(caseloop("tickets", "show", number, "--json", cwd=site).stdout)
    (note,) = [e for e in case["timeline"] if e["text"] == "called the shop"]
    assert note["actor"] == f"cli:{getpass.getuser()}"
    assert "." not in note["at"]  # no microseconds
    assert "b2b" in caseloop("tickets", "set", "--help", cwd=site).stdout  # reason codes listed


def test_migrations_log_in_the_key_value_form_and_help_pages_say_what(tmp_path: Path) -> None:
    config = tmp_path / "caseloop.toml"
    config.write_text('data_dir = "data"\n')
    done = caseloop("migrate", "--config", str(config), cwd=tmp_path)
    alembic = [line for line in done.stderr.splitlines() if "alembic" in line]
    assert alembic and all(" event=migrate." in line for line in alembic)
    assert any("event=migrate.upgrade from=- to=0001" in line for line in alembic)
    page = caseloop("tickets", "note", "--help", cwd=tmp_path).stdout
    assert "An internal note on a case (never sent)." in page
