"""The `caseloop` command in a subprocess, for tests and benchmarks: one helper, not copies.

Tests import it as `from cli_run import ...` (tests/ is on the path through conftest.py); bench
scripts do the same after `import servers`, which puts tests/ on the path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

CASELOOP = [sys.executable, "-m", "daemon"]  # this Python's caseloop, checkout or installed


def caseloop_argv(
    *args: str, config: Path | None = None, log_level: str | None = None
) -> list[str]:
    """The command line of `caseloop [--config C] [--log-level L] ARGS`."""
    argv = [*CASELOOP]
    if config is not None:
        argv += ["--config", str(config)]
    if log_level is not None:
        argv += ["--log-level", log_level]
    return [*argv, *args]


def caseloop_env() -> dict[str, str]:
    """Unbuffered output, and no $CASELOOP_CONFIG of the caller's leaking in."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("CASELOOP_CONFIG", None)
    return env


def run_caseloop(
    *args: str,
    config: Path | None = None,
    log_level: str | None = None,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float | None = 120,
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Run `caseloop ARGS` to its end and return the result (stdout and stderr captured as text
    unless given). check: a non-zero exit raises AssertionError showing what it printed."""
    if "stdout" not in kwargs and "stderr" not in kwargs:
        kwargs["capture_output"] = True
    result = subprocess.run(
        caseloop_argv(*args, config=config, log_level=log_level),
        cwd=cwd,
        env=caseloop_env(),
        text=True,
        timeout=timeout,
        check=False,
        **kwargs,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"caseloop {' '.join(args)} exited {result.returncode}:\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


def start_caseloop(
    *args: str, config: Path | None = None, log_level: str | None = None, **kwargs: Any
) -> subprocess.Popen[str]:
    """Start `caseloop ARGS` (e.g. the daemon, `run`) and return the process, running."""
    return subprocess.Popen(
        caseloop_argv(*args, config=config, log_level=log_level),
        env=caseloop_env(),
        text=True,
        **kwargs,
    )
