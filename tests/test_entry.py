"""The `caseloop` command's entry (daemon/__main__.py): which command starts the fork server
early, and a command's output whole although the process ends without interpreter teardown."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_config

from daemon.__main__ import _command
from daemon.maildirs import deliver_to_maildir

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["run", "--once"], "run"),
        (["--config", "run", "tickets", "list"], "tickets"),  # a config file named "run"
        (["--log-level", "DEBUG", "--config", "c.toml", "run"], "run"),
        (["--config=c.toml", "run", "--once"], "run"),
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_is_the_first_word_that_is_no_option_or_its_value(
    argv: list[str], command: str | None
) -> None:
    assert _command(argv) == command


def _complaint(i: int) -> bytes:
    return (
        f"From: c{i}@example.com\r\nTo: complaints@shop.example\r\n"
        f"Subject: complaint {i} about a kettle\r\nMessage-ID: <entry-{i}@example.com>\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
        f"The kettle I bought leaks ({i}). Please refund.\r\n"
    ).encode()


def _caseloop(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "CASELOOP_CONFIG")}
    argv = [sys.executable, "-m", "daemon", "--config", str(config), *args]
    return subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def test_run_once_output_is_whole_and_leaves_no_process_or_warning(tmp_path: Path) -> None:
    """Output is flushed before the process ends (block-buffered into a pipe here), the fork
    server and the worker it forked end with the command, and multiprocessing finds nothing
    left to clean up (its resource tracker would warn of leaked semaphores)."""
    config = write_config(tmp_path, "[intake]\nbatch_size = 10\nprepare_aside = true\n")
    inbox = tmp_path / "caseloop-data" / "inbox"
    for i in range(60):
        deliver_to_maildir(inbox, _complaint(i), name=f"{i:04d}.eml")
    before = _processes()
    done = _caseloop(config, "--log-level", "WARNING", "run", "--once")
    assert done.returncode == 0, done.stderr
    assert "60" in done.stdout and "Traceback" not in done.stderr, (done.stdout, done.stderr)
    assert "leaked" not in done.stderr and "resource_tracker" not in done.stderr, done.stderr
    listed = _caseloop(config, "tickets", "list", "--json", "--limit", "100")
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 60  # the whole JSON: flushed before the end
    left = {pid: cmd for pid, cmd in _processes().items() if pid not in before}
    assert not [cmd for cmd in left.values() if "forkserver" in cmd or "daemon" in cmd], left


def _processes() -> dict[int, str]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            found[int(entry)] = raw.replace(b"\0", b" ").decode(errors="replace")
    return found


def test_output_that_cannot_be_written_is_an_error_and_exit_handlers_still_run(
    tmp_path: Path,
) -> None:
    """The end skips the interpreter's teardown, not what asked to run at exit (a library's
    temporary folder, say), and a full disk is not a clean exit (Python's own code: 120)."""
    config = write_config(tmp_path)
    assert _caseloop(config, "migrate").returncode == 0
    ran = tmp_path / "exit-handler-ran"
    code = (
        "import atexit, sys; from daemon.__main__ import main; "
        f"atexit.register(lambda: open({str(ran)!r}, 'w').close()); "
        "sys.argv[1:] = sys.argv[2:]; main()"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONUNBUFFERED", "CASELOOP_CONFIG")}
    argv = [sys.executable, "-c", code, "-", "--config", str(config), "tickets", "list"]
    with open("/dev/full", "w") as full:
        done = subprocess.run(argv, env=env, cwd=REPO, stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=300)  # fmt: skip
    assert done.returncode == 120, done.stderr
    assert "No space left on device" in done.stderr
    assert ran.exists()
