"""Shared by the bench scripts: a Dovecot, an SMTP sink that counts, configs, the daemon, RSS.

Also a command: `python bench/servers.py sink PORT` runs a counting aiosmtpd sink in its own
process (SinkProcess drives it over stdin: "count", "reset"; EOF stops it).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for _path in (REPO / "tests", REPO / "bench"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from cli_run import caseloop_argv  # noqa: E402  (tests/cli_run.py: caseloop in a subprocess)
from cli_run import run_caseloop as run_caseloop  # noqa: E402  (for the bench scripts)
from cli_run import start_caseloop as start_caseloop  # noqa: E402
from dovecot import Dovecot  # noqa: E402  (tests/dovecot.py: a throwaway unprivileged Dovecot)

PYTHON = sys.executable


def compiled(checkout: Path = REPO) -> None:
    """caseloop's own modules as bytecode in their __pycache__, as `pip install .` (the
    README's install, systemd/caseloop.service's /opt/caseloop) and the peers' venvs have them.
    A checkout run with PYTHONDONTWRITEBYTECODE set (some machines set it) otherwise compiles
    every module from source in every process: about 0.2 s of start-up each for intake, the
    fork server of its worker and delivery, which would be timed as caseloop's own."""
    import compileall

    for package in ("daemon", "handlers", "migrations"):
        compileall.compile_dir(checkout / package, quiet=1)


compiled()
_HEADER = re.compile(rb"(?im)^(message-id|in-reply-to):[ \t]*(<[^>\r\n]*>)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def header_ids(raw: bytes) -> tuple[str | None, str | None]:
    """(Message-ID, In-Reply-To) of a mail, read from its header block only."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    found = {m.group(1).lower(): m.group(2).decode() for m in _HEADER.finditer(raw[:end])}
    return found.get(b"message-id"), found.get(b"in-reply-to")


# -- SMTP sink ------------------------------------------------------------------------------


class CountingSink:
    """An aiosmtpd handler that counts mail and notes (arrival time, Message-ID, In-Reply-To)."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.count = 0
        self.arrivals: list[tuple[float, str | None, str | None]] = []
        self.cond = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        now = time.monotonic()
        ids = header_ids(envelope.content) if self.keep else (None, None)
        with self.cond:
            self.count += 1
            if self.keep:
                self.arrivals.append((now, *ids))
            self.cond.notify_all()
        return "250 OK"

    def reset(self) -> None:
        with self.cond:
            self.count = 0
            self.arrivals.clear()

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)


class Sink:
    """A CountingSink served by an aiosmtpd Controller on a loopback port, in this process."""

    def __init__(self, port: int | None = None, keep: bool = True) -> None:
        from aiosmtpd.controller import Controller

        self.handler = CountingSink(keep)
        self.port = port or free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)

    def start(self) -> Sink:
        self.controller.start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.controller.stop()


class SinkProcess:
    """A counting sink in its own process, so the process being timed shares no GIL with it.

    `count()` asks it how many mails it took so far; `reset()` sets that back to 0.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            [PYTHON, str(Path(__file__).resolve()), "sink", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._ask(None) != "ready":
            self.proc.kill()
            raise RuntimeError("the sink process did not start")

    def _ask(self, command: str | None) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def count(self) -> int:
        return int(self._ask("count"))

    def reset(self) -> None:
        self._ask("reset")

    def wait_for(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _serve_sink(port: int) -> int:
    """The sink process: answers "count" and "reset" on stdin; ends at EOF."""
    sink = Sink(port, keep=False).start()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "reset":
            sink.handler.reset()
        print(sink.handler.count, flush=True)
    sink.stop()
    return 0


# -- Dovecot --------------------------------------------------------------------------------


def start_dovecot() -> Dovecot:
    if not os.path.exists("/usr/sbin/dovecot"):
        raise SystemExit("Dovecot is not installed (/usr/sbin/dovecot; Debian dovecot-imapd)")
    server = Dovecot()
    server.start()
    return server


def multiappend(server: Dovecot, raws: Iterable[bytes], folder: str = "INBOX") -> int:
    """APPEND many messages fast: MULTIAPPEND in chunks of 500 on one connection."""
    count = 0
    chunk: list[bytes] = []
    with server.client() as client:
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for raw in raws:
            chunk.append(raw)
            if len(chunk) == 500:
                client.multiappend(folder, chunk)
                count += len(chunk)
                chunk = []
        if chunk:
            client.multiappend(folder, chunk)
            count += len(chunk)
    return count


# -- PostgreSQL -----------------------------------------------------------------------------

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def fresh_database(prefix: str) -> str:
    """CREATE DATABASE prefix_<random> on the loopback PostgreSQL; its name."""
    import uuid

    from sqlalchemy import create_engine, text

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name


def drop_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def database_url(name: str) -> str:
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


# -- caseloop -------------------------------------------------------------------------------


def write_config(
    root: Path,
    *,
    imap: Dovecot | None = None,
    smtp_port: int | None = None,
    batch_size: int | None = None,
    poll_interval: str = "1s",
    delivery_interval: str = "1s",
    folder: str = "INBOX",
) -> Path:
    """A caseloop.toml in `root`: SQLite and a Maildir under caseloop-data/, or an IMAP
    mailbox at `imap`; acks to the SMTP sink at `smtp_port`, else to the Maildir outbox."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [
        'data_dir = "caseloop-data"',
        "[intake]",
        f'poll_interval = "{poll_interval}"',
        *([f"batch_size = {batch_size}"] if batch_size else []),
        "[delivery]",
        f'interval = "{delivery_interval}"',
    ]
    if imap is not None:
        (root / "imap-password").write_text(imap.password + "\n")
        lines += [
            "[[mailboxes]]",
            'name = "imap"',
            'type = "imap"',
            f'address = "{imap.user}"',
            f'host = "{imap.host}"',
            f"port = {imap.port}",
            'security = "none"',
            f'username = "{imap.user}"',
            'password_file = "imap-password"',
            f'folder = "{folder}"',
        ]
    if smtp_port is not None:
        lines += ["[smtp]", 'host = "127.0.0.1"', f"port = {smtp_port}", 'security = "none"']
    path = root / "caseloop.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def caseloop(config: Path, *args: str, log_level: str = "WARNING") -> list[str]:
    return caseloop_argv(*args, config=config, log_level=log_level)


def fill_maildir(inbox: Path, raws: Iterable[bytes]) -> int:
    for sub in ("tmp", "new", "cur"):
        (inbox / sub).mkdir(parents=True, exist_ok=True)
    count = 0
    for i, raw in enumerate(raws):
        name = f"{i:08d}.bench"
        (inbox / "tmp" / name).write_bytes(raw)
        os.rename(inbox / "tmp" / name, inbox / "new" / name)
        count += 1
    return count


def db(root: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{root / 'caseloop-data' / 'caseloop.db'}?mode=ro", uri=True)


def vm_kb(pid: int, field: str = "VmRSS") -> int | None:
    """VmRSS (or VmHWM, the peak) of a process in kB from /proc; None once it has gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def proc_stat(pid: int | str) -> tuple[str, list[str]] | None:
    """A process's /proc/PID/stat: its command name and the fields after it (fields[1] is the
    parent's PID, fields[11:13] its own utime and stime, fields[13:15] its reaped children's,
    in clock ticks); None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            head, rest = stat.read().rsplit(")", 1)
    except (OSError, ValueError):
        return None
    return head.split("(", 1)[1], rest.split()


def proc_stats() -> Iterator[tuple[int, str, list[str]]]:
    """(PID, command name, fields) of every process now (see proc_stat)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (found := proc_stat(entry)) is not None:
            yield int(entry), *found


class TreeCPU:
    """CPU seconds of processes and all their descendants, each process's own (utime +
    stime in /proc) read every `every` seconds in a thread. A command's rusage cannot tell:
    caseloop's worker and delivery processes are forked from its fork server
    (daemon/children.py), and their CPU never reaches the command's. `wait(pid)` reads once
    more when a root has ended, before reaping it. A descendant counts as last seen, so up to
    `every` seconds of its CPU just before it ends may be missed."""

    def __init__(self, roots: list[int], every: float = 0.1) -> None:
        self.roots = list(roots)
        self.every = every
        self.owner: dict[int, int] = {pid: pid for pid in roots}  # pid -> its root
        self.cpu: dict[int, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        parents: dict[int, int] = {}
        times: dict[int, float] = {}
        for pid, _, fields in proc_stats():
            parents[pid] = int(fields[1])
            times[pid] = (int(fields[11]) + int(fields[12])) / tick  # its own only
        with self._lock:
            for pid in sorted(parents):  # parents are older, so mostly seen first
                root = self.owner.get(pid)
                if root is None and parents[pid] in self.owner:
                    root = self.owner[pid] = self.owner[parents[pid]]
                if root is not None:
                    self.cpu[pid] = max(self.cpu.get(pid, 0.0), times[pid])

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self._read()

    def wait(self, pid: int) -> int:
        """Wait for root `pid` to end, read its CPU, reap it: its exit code."""
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        self._read()
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status)

    def stop(self) -> dict[int, float]:
        """CPU seconds per root, its descendants included."""
        self._stop.set()
        self._thread.join()
        total = dict.fromkeys(self.roots, 0.0)
        for pid, cpu in self.cpu.items():
            total[self.owner[pid]] += cpu
        return total


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))  # nearest rank
    return ordered[rank]


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "sink":
        raise SystemExit(_serve_sink(int(sys.argv[2])))
    raise SystemExit("usage: servers.py sink PORT")
