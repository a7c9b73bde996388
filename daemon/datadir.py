"""The data folder: made (with the embedded database) by the commands that may make it, and
checked by `caseloop check-config`, which creates nothing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sqlalchemy import make_url

from daemon.config import Config, ConfigError


def check_data_dir(path: Path) -> str:
    """Whether the data folder is there and writable, or could be made; creates nothing."""
    if path.is_dir():
        if os.access(path, os.W_OK | os.X_OK):
            return "ok"
        return "FAILED: not writable by this user"
    if path.exists():
        return "FAILED: not a folder"
    parent = next((p for p in path.parents if p.exists()), None)
    try:  # a probe made and removed at once: permissions alone do not tell (root, /proc)
        os.rmdir(tempfile.mkdtemp(prefix=".caseloop-check-", dir=parent))
    except OSError as exc:
        return f"FAILED: does not exist and cannot be created in {parent}: {exc.strerror}"
    return "ok, does not exist yet: `caseloop run` creates it"


def prepare_data_dir(config: Config, create: bool) -> None:
    """The data folder (and the embedded database in it) is there, or made (`create`)."""
    database = make_url(config.database_url).database if config.database_url.startswith(
        "sqlite"
    ) else None  # fmt: skip
    if not create:
        if database and database != ":memory:" and not Path(database).exists():
            raise ConfigError(
                config.source,
                "database.url",
                f"no caseloop data here: {database} does not exist (another folder, or a "
                "missing --config?); `caseloop init` sets one up, `caseloop run` creates it",
            )
        return
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            config.source, "data_dir", f"{config.data_dir} cannot be created: {exc.strerror}"
        ) from None
    if not os.access(config.data_dir, os.W_OK | os.X_OK):
        raise ConfigError(config.source, "data_dir", f"{config.data_dir} is not writable")
