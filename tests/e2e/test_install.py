"""A plain non-editable `pip install .` works from another folder: templates, migrations ship."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_install_runs_the_samples_from_another_directory(tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    # Build and install the wheel itself; its dependencies come from the test environment
    # (put on PYTHONPATH below) so the test needs no network.
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", str(ROOT)],
        check=True,
        cwd=tmp_path,
        timeout=300,
    )
    site = subprocess.run(
        [str(python), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    installed = Path(site)
    assert (installed / "daemon/templates/zh-CN/ack.txt").is_file()
    assert (installed / "daemon/migrations/env.py").is_file()
    assert any((installed / "daemon/samples").glob("*.eml"))

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    env.pop("CASELOOP_CONFIG", None)
    script = env_dir / "bin" / "caseloop"
    run = subprocess.run(
        [str(script), "init", "site", "--with-samples"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    run = subprocess.run(
        [str(script), "--config", "site/caseloop.toml", "run", "--once"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert "cases opened: 4" in run.stdout
    # the code that ran is the installed copy, not this checkout
    where = subprocess.run(
        [str(python), "-c", "import daemon; print(daemon.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.startswith(str(env_dir))
    assert sys.prefix != str(env_dir)
