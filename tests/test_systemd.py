"""The shipped unit is one an operator can install as is."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "caseloop.service"


def test_unit_runs_the_daemon_hardened_with_credentials() -> None:
    text = UNIT.read_text()
    for line in (
        "ExecStart=/opt/caseloop/bin/caseloop run",
        "User=caseloop",
        "Restart=on-failure",
        "LoadCredential=imap:",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Environment=CASELOOP_CONFIG=/etc/caseloop/caseloop.toml",
    ):
        assert line in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "caseloop.service"
    unit.write_text(UNIT.read_text().replace("/opt/caseloop/bin/caseloop", "/bin/true"))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "caseloop.service" not in result.stderr  # no warnings about our unit
