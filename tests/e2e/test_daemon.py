"""`caseloop run` as systemd runs it: polls on its schedule, stops cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from cli_run import start_caseloop

from daemon.maildirs import deliver_to_maildir

DATA = Path(__file__).parent.parent / "data"


def _wait_for(predicate, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_daemon_takes_in_new_mail_while_running_and_stops_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "caseloop.toml"
    config.write_text(
        'data_dir = "caseloop-data"\n[intake]\npoll_interval = "1s"\nack_max_age = "365 days"\n'
        '[delivery]\ninterval = "1s"\n'
    )
    proc = start_caseloop(
        "run", config=config, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    outbox = tmp_path / "caseloop-data/outbox/new"
    inbox = tmp_path / "caseloop-data/inbox"
    try:
        assert _wait_for(lambda: (inbox / "new").is_dir()), "daemon did not create its inbox"
        deliver_to_maildir(inbox, (DATA / "en-plain.eml").read_bytes(), name="first")
        assert _wait_for(lambda: outbox.is_dir() and len(list(outbox.iterdir())) == 1)
        deliver_to_maildir(inbox, (DATA / "gb18030.eml").read_bytes(), name="second")
        assert _wait_for(lambda: len(list(outbox.iterdir())) == 2)
        assert list((inbox / "new").iterdir()) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "event=daemon.stopping signal=SIGTERM" in err
    assert "event=daemon.stopped" in err
    assert "Traceback" not in err
