"""The shipped unit is one an operator can install as is, and the daemon talks to systemd.

The install steps at the top of systemd/caseloop.service are run as written, with the system's
folders moved under a temporary root and `nobody` standing in for the `caseloop` user; then the
installed unit's ExecStartPre and ExecStart run as the unit would run them (user, group, umask,
working directory, environment, a notify socket), without systemd. The daemon's sd_notify
messages are read from a unix datagram socket the test binds, as systemd's own.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_run import caseloop_argv, caseloop_env, run_caseloop

from daemon import config as configmod
from daemon.cli import main
from daemon.install import arrived_now
from daemon.maildirs import deliver_to_maildir
from daemon.resources import shipped_dir

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "systemd" / "caseloop.service"
INSTALLED_CASELOOP = Path(sys.executable).parent / "caseloop"  # this venv's console script
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Steps the test does not take as written on a shared host, and why:
NOT_HERE = {
    "useradd ": "the test makes no user on the host: `nobody` stands in for caseloop",
    "python3 -m venv ": "no network in tests: _stand_in_venv makes the venv at the same place",
    "systemctl ": "no systemd here: the test runs ExecStartPre and ExecStart itself",
}


class NotifySocket:
    """A unix datagram socket in systemd's place: what the daemon sends to $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)  # the daemon may run as another user
        self.messages: list[tuple[float, dict[str, str]]] = []

    def receive(self, seconds: float) -> None:
        """Collect what arrives within `seconds`."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.messages.append((time.monotonic(), fields))

    def wait_for(self, wanted: Callable[[dict[str, str]], bool], seconds: float) -> dict[str, str]:
        """The first message (already received or arriving within `seconds`) that is wanted."""
        end = time.monotonic() + seconds
        seen = 0
        while True:
            for _, fields in self.messages[seen:]:
                if wanted(fields):
                    return fields
            seen = len(self.messages)
            if time.monotonic() >= end:
                raise AssertionError(f"not received within {seconds} s: {self.messages}")
            self.receive(min(0.5, end - time.monotonic()))

    def pings(self, since: float = 0.0) -> int:
        return sum(1 for at, f in self.messages if at >= since and f.get("WATCHDOG") == "1")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    receiver = NotifySocket(tmp_path / "notify")
    yield receiver
    receiver.close()


def _stop(daemon: subprocess.Popen[str]) -> None:
    if daemon.poll() is None:
        daemon.kill()
        daemon.wait(timeout=30)


# -- the unit file -------------------------------------------------------------------------


def _service_section(text: str) -> dict[str, list[str]]:
    """[Service] settings of a unit: each key with its values in order."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section in ("[Service]", "[Unit]"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def _install_steps(text: str) -> list[str]:
    """The install commands: the first run of comment lines indented by three spaces."""
    steps: list[str] = []
    for line in text.splitlines():
        if line.startswith("#   "):
            steps.append(line[4:].strip())
        elif steps:
            break
    return steps


def test_unit_is_notify_with_a_watchdog_hardened_with_credentials() -> None:
    text = UNIT.read_text()
    service = _service_section(text)
    assert service["Type"] == ["notify"]
    assert service["WatchdogSec"] and service["NotifyAccess"] == ["main"]
    for line in (
        "ExecStart=/opt/caseloop/bin/caseloop run",
        "ExecStartPre=/opt/caseloop/bin/caseloop migrate",
        "User=caseloop",
        "Restart=on-failure",
        "LoadCredential=imap:/etc/caseloop/imap.secret",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "Environment=CASELOOP_CONFIG=/etc/caseloop/caseloop.toml",
    ):
        assert line in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "caseloop.service"
    unit.write_text(UNIT.read_text().replace("/opt/caseloop/bin/caseloop", str(INSTALLED_CASELOOP)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "caseloop.service" not in result.stderr  # no warnings about our unit


# -- the install steps, followed as written --------------------------------------------------


@pytest.fixture
def system_root() -> Iterator[Path]:
    """A temporary root with the folders every system has (/etc, /var/lib, /usr/share/doc,
    /opt), readable by everyone as on a real system; pytest's tmp_path is root-only."""
    root = Path(tempfile.mkdtemp(prefix="caseloop-root-"))
    os.chmod(root, 0o755)
    for folder in ("etc/systemd/system", "var/lib", "usr/share/doc", "opt", "run"):
        (root / folder).mkdir(parents=True)
    yield root
    shutil.rmtree(root)


def _rewritten(text: str, root: Path) -> str:
    """The system's folders moved under `root`, and nobody for the caseloop user."""
    for path in (
        "/etc/caseloop",
        "/etc/systemd/system",
        "/var/lib/caseloop",
        "/usr/share/doc",
        "/opt/caseloop",
    ):
        text = text.replace(path, f"{root}{path}")
    for was, now in (
        ("-u caseloop ", "-u nobody "),
        ("--user caseloop", "--user nobody"),
        ("User=caseloop", "User=nobody"),
        ("Group=caseloop", f"Group={grp.getgrgid(pwd.getpwnam('nobody').pw_gid).gr_name}"),
    ):
        text = text.replace(was, now)
    return text


def _stand_in_venv(prefix: Path) -> None:
    """In place of `python3 -m venv /opt/caseloop && /opt/caseloop/bin/pip install .`: a venv
    there whose Python sees this checkout and the packages of this test's environment, and a
    `caseloop` script like pip's. Made from the system's Python of this version when there is
    one: this test's may live where the service user cannot go (pyenv under /root)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    system_python = Path(f"/usr/bin/python{version}")
    python = system_python if system_python.is_file() else Path(sys.executable)
    subprocess.run([str(python), "-m", "venv", "--without-pip", str(prefix)], check=True)
    site = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    (prefix / f"lib/python{version}/site-packages/caseloop-test.pth").write_text(
        f"import site; site.addsitedir({site!r})\n"
    )
    script = prefix / "bin/caseloop"
    script.write_text(
        f"#!{prefix}/bin/python\nimport sys\nfrom daemon.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)


def _as_the_unit(service: dict[str, list[str]], home: Path, extra: dict[str, str]) -> dict:
    """Popen arguments that run a command as systemd would run this [Service]."""
    user = service["User"][0]
    env = {
        "PATH": SYSTEMD_PATH,
        "HOME": str(home),  # the caseloop user's home, per the useradd step
        "USER": user,
        "LOGNAME": user,
        "SHELL": "/usr/sbin/nologin",
        **dict(value.split("=", 1) for value in service.get("Environment", [])),
        **extra,
    }
    return {
        "user": user,
        "group": service["Group"][0],
        "extra_groups": [],
        "umask": int(service["UMask"][0], 8),
        "cwd": service["WorkingDirectory"][0],
        "env": env,
    }


@pytest.mark.skipif(os.geteuid() != 0, reason="the install steps run as root (owners, runuser)")
@pytest.mark.skipif(shutil.which("runuser") is None, reason="runuser (util-linux) not here")
def test_install_steps_as_written_give_a_service_that_starts(
    system_root: Path,
) -> None:
    root = system_root
    steps = _install_steps(UNIT.read_text())
    skipped = [s for s in steps if s.startswith(tuple(NOT_HERE))]
    assert len(skipped) == len(NOT_HERE), f"install steps changed: {steps}"
    _stand_in_venv(root / "opt/caseloop")
    # The stand-in venv reads this checkout and its venv in place: the service user must be
    # able to. A clone under a 0700 folder (mktemp -d) is not; say so, not "No module named".
    readable = subprocess.run(
        ["runuser", "-u", "nobody", "--", str(root / "opt/caseloop/bin/python"), "-c",
         "import daemon.cli"],
        capture_output=True, text=True,
    )  # fmt: skip
    if readable.returncode != 0:
        pytest.fail(
            f"the service user (nobody) cannot read this checkout ({REPO}) or its venv: clone "
            f"it where other users may read (not under a 0700 folder)\n{readable.stderr[-500:]}"
        )
    for step in steps:
        if step in skipped:
            continue
        command = _rewritten(step, root)
        done = subprocess.run(
            ["bash", "-c", command], cwd=REPO, env=caseloop_env(), capture_output=True, text=True
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"

    etc, state = root / "etc/caseloop", root / "var/lib/caseloop"
    nobody = pwd.getpwnam("nobody")
    # the config: root's, readable by the service's group; every path absolute in the state
    assert stat.S_IMODE(etc.stat().st_mode) == 0o750
    assert (etc.stat().st_uid, etc.stat().st_gid) == (0, nobody.pw_gid)
    assert stat.S_IMODE((etc / "caseloop.toml").stat().st_mode) == 0o640
    assert (state.stat().st_uid, stat.S_IMODE(state.stat().st_mode)) == (nobody.pw_uid, 0o750)
    config = configmod.load(etc / "caseloop.toml")
    assert config.data_dir == state
    assert config.database_url == f"sqlite:///{state}/caseloop.db"
    for box in config.mailboxes:
        assert box.path and box.path.is_relative_to(state)
        assert box.quarantine_path and box.quarantine_path.is_relative_to(state)

    installed = (root / "etc/systemd/system/caseloop.service").read_text()
    assert installed == UNIT.read_text()
    service = _service_section(_rewritten(installed, root))  # its paths, under the root
    assert service["Type"] == ["notify"] and service["WatchdogSec"]
    for doc in service["Documentation"]:  # the install steps put it there
        assert Path(doc.removeprefix("file://")).is_file(), doc

    # ExecStartPre, as the unit runs it: the database is made in the state folder, the user's
    receiver = NotifySocket(root / "run/notify")
    watchdog = int(service["WatchdogSec"][0].removesuffix("s")) * 1_000_000
    run_as = _as_the_unit(
        service,
        home=state,
        extra={"NOTIFY_SOCKET": str(receiver.path), "WATCHDOG_USEC": str(watchdog)},
    )
    for command in service["ExecStartPre"]:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, **run_as)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
    database = state / "caseloop.db"
    assert database.is_file() and database.stat().st_uid == nobody.pw_uid

    check = subprocess.run(
        [str(root / "opt/caseloop/bin/caseloop"), "check-config"],
        capture_output=True,
        text=True,
        **run_as,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "schema at head" in check.stdout

    # ExecStart: the daemon says it is ready to the notify socket, and stops on SIGTERM
    (command,) = service["ExecStart"]
    daemon = subprocess.Popen(shlex.split(command), stderr=subprocess.PIPE, text=True, **run_as)
    try:
        ready = receiver.wait_for(lambda f: f.get("READY") == "1", 60)
        assert "0 open" in ready["STATUS"], ready
        daemon.send_signal(signal.SIGTERM)
        receiver.wait_for(lambda f: f.get("STOPPING") == "1", 30)
        assert daemon.wait(timeout=60) == 0
    finally:
        _stop(daemon)
        receiver.close()
    assert daemon.stderr is not None
    assert "Traceback" not in daemon.stderr.read()


# -- sd_notify from a running daemon ---------------------------------------------------------


def _site(tmp_path: Path) -> Path:
    run_caseloop("init", str(tmp_path / "site"))
    config = tmp_path / "site" / "caseloop.toml"
    text = config.read_text()
    config.write_text(text.replace('poll_interval = "30s"', 'poll_interval = "1s"'))
    return config


def _start_daemon(
    config: Path, notify: NotifySocket, watchdog_usec: int, argv: list[str] | None = None
) -> subprocess.Popen[str]:
    env = {**caseloop_env(), "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": str(watchdog_usec)}
    env.pop("WATCHDOG_PID", None)  # unset: the watchdog is this process's
    return subprocess.Popen(
        argv or caseloop_argv("run", config=config), env=env, text=True, stderr=subprocess.PIPE
    )


def test_daemon_tells_systemd_ready_live_counts_watchdog_and_stopping(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    config = _site(tmp_path)
    daemon = _start_daemon(config, notify_socket, watchdog_usec=3_000_000)
    try:
        ready = notify_socket.wait_for(lambda f: f.get("READY") == "1", 60)
        assert "cases 0 open" in ready["STATUS"] and "outbox 0 queued" in ready["STATUS"]
        notify_socket.wait_for(lambda f: f.get("WATCHDOG") == "1", 10)

        # a complaint arrives: the counts systemd shows follow
        sample = shipped_dir("samples") / "02-en-late-delivery.eml"
        inbox = configmod.load(config).mailboxes[0].path
        assert inbox is not None
        deliver_to_maildir(inbox, arrived_now(sample.read_bytes()))
        notify_socket.wait_for(
            lambda f: re.search(
                r"cases 1 open.*outbox 0 queued, 0 failed, 1 sent", f.get("STATUS", "")
            ),
            30,
        )

        daemon.send_signal(signal.SIGTERM)
        notify_socket.wait_for(lambda f: f.get("STOPPING") == "1", 30)
        assert daemon.wait(timeout=60) == 0
    finally:
        _stop(daemon)


HANGING_SCHEDULER = """
import os, sys, threading
from apscheduler.schedulers.base import BaseScheduler

process_jobs = BaseScheduler._process_jobs

def hanging(self):
    # once the test creates this file, the scheduler's own loop hangs (as in a deadlock)
    if os.path.exists(sys.argv[1]):
        threading.Event().wait()
    return process_jobs(self)

BaseScheduler._process_jobs = hanging
from daemon.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_watchdog_pings_stop_while_the_scheduler_hangs(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    config = _site(tmp_path)
    hang = tmp_path / "hang"
    argv = [sys.executable, "-c", HANGING_SCHEDULER, str(hang), "--config", str(config), "run"]
    daemon = _start_daemon(config, notify_socket, watchdog_usec=3_000_000, argv=argv)
    try:
        notify_socket.wait_for(lambda f: f.get("READY") == "1", 60)
        notify_socket.receive(3)
        assert notify_socket.pings() >= 2  # the scheduler runs: pinged about once a second

        hang.touch()
        notify_socket.receive(2.5)  # the heartbeat goes stale within half the watchdog (1.5 s)
        quiet_from = time.monotonic()
        notify_socket.receive(4)  # longer than WatchdogSec: systemd would kill and restart it
        assert notify_socket.pings(since=quiet_from) == 0
        assert daemon.poll() is None  # the main loop runs on; it holds the pings back
    finally:
        _stop(daemon)


@pytest.mark.skipif(os.geteuid() != 0, reason="init --system runs as root")
def test_init_system_refuses_a_config_whose_paths_the_unit_cannot_write(
    system_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    etc, state = system_root / "etc/caseloop", system_root / "var/lib/caseloop"
    assert main(["init", str(etc)]) == 0  # plain init: paths relative to /etc/caseloop
    capsys.readouterr()
    code = main(["init", "--system", str(etc), "--data-dir", str(state), "--user", "nobody"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"data_dir = {etc}/caseloop-data" in err and "database.url" in err
    assert "ProtectSystem=strict" in err
    assert not state.exists()


def test_init_data_dir_and_user_only_go_with_system(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["init", str(tmp_path / "site"), "--user", "nobody"]) == 2
    assert "--system" in capsys.readouterr().err
    assert not (tmp_path / "site").exists()
