"""A real Dovecot for the tests: its own config, port, passwd-file and Maildirs in a temp folder."""

from __future__ import annotations

import atexit
import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from imapclient import IMAPClient

DOVECOT = "/usr/sbin/dovecot"
DOVECONF = "/usr/bin/doveconf"

CONFIG = """\
# Written by tests/dovecot.py: a throwaway instance that touches nothing outside {root}.
instance_name = caseloop-test-{port}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
# No slowing down of wrong passwords: the tests try one on purpose.
auth_failure_delay = 0
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = {uid}
first_valid_gid = {gid}
mail_location = maildir:~/Maildir
# A test server: an APPEND need not reach the disk platter.
mail_fsync = never
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%d/%n
}}
service imap-login {{
  # no chroot: containers often lack CAP_SYS_CHROOT, and this listens on loopback only
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  # no growing per-IP penalty after the wrong password a test sends on purpose
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
protocol imap {{
  mail_max_userip_connections = 200
}}
"""


def _group_alive(group: int) -> bool:
    """Does any process of the group still run? Zombies waiting for init to reap them hold no
    socket and do not count (init may take seconds to reap the orphaned children)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp
        if int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Dovecot:
    """One Dovecot instance rooted in its own temp folder, started and stopped by the tests.

    As root it runs the way Debian does (login processes as `dovenull`, mail as `nobody`); as an
    ordinary user everything runs as that user.
    """

    host = "127.0.0.1"
    user = "support@example.com"
    password = "secret"
    users = {"support@example.com": "secret", "other@example.com": "secret2"}

    def __init__(self, root: Path | None = None, port: int | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="caseloop-dovecot-"))
        self.port = port or _free_port()
        self.conf = self.root / "dovecot.conf"
        self.log = self.root / "dovecot.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._write_config()
        # Not PR_SET_PDEATHSIG: that fires when the *thread* that started it ends (a restart
        # from a helper thread would kill the new server). A crashed test run still cleans up.
        atexit.register(self.stop)

    # -- lifecycle ------------------------------------------------------------------------

    def _write_config(self) -> None:
        if os.geteuid() == 0:
            login_user, mail_user = "dovenull", "nobody"
        else:
            login_user = mail_user = pwd.getpwuid(os.geteuid()).pw_name
        mail = pwd.getpwnam(mail_user)
        group = grp.getgrgid(mail.pw_gid).gr_name
        # Dovecot's unprivileged processes must reach the folder; mkdtemp makes it 0700.
        self.root.chmod(0o755)
        home = self.root / "home"
        home.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            os.chown(home, mail.pw_uid, mail.pw_gid)
        passwd = self.root / "passwd"
        passwd.write_text("".join(f"{u}:{{PLAIN}}{p}::::::\n" for u, p in self.users.items()))
        passwd.chmod(0o644)  # auth runs as the internal user; these are test-only passwords
        self.conf.write_text(
            CONFIG.format(
                root=self.root,
                port=self.port,
                login_user=login_user,
                internal_user=mail_user,
                internal_group=group,
                uid=mail.pw_uid,
                gid=mail.pw_gid,
            )
        )
        check = subprocess.run(
            [DOVECONF, "-n", "-c", str(self.conf)], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise RuntimeError(f"doveconf rejects {self.conf}: {check.stderr.strip()}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        self.process = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() can end every child
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited {self.process.returncode}: {self.log_text()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(100).startswith(b"* OK"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"dovecot did not greet on port {self.port}: {self.log_text()}")

    def crash(self) -> None:
        """SIGKILL every process of the instance, then start it again: clients get no BYE."""
        self.stop(signal.SIGKILL)
        self.start()

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        """End the master and every process it started, as a shutdown of the host would.

        Dovecot's master alone does not take its imap processes down with it: an open session
        would keep working against a stopped server. So the whole process group is signalled.
        """
        if self.process is None:
            return
        group = self.process.pid  # start_new_session: the group id is the master's pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, how)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not _group_alive(group):
                break
            time.sleep(0.02)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self.process = None

    def restart(self) -> None:
        """Stop and start on the same port (the master sets SO_REUSEADDR)."""
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else "(no log)"

    # -- mailbox helpers (plain IMAP, as any other client would) --------------------------

    def client(self, user: str | None = None) -> IMAPClient:
        user = user or self.user
        client = IMAPClient(self.host, self.port, ssl=False, timeout=30)
        client.login(user, self.users[user])
        return client

    def append(
        self,
        raw: bytes,
        folder: str = "INBOX",
        flags: Iterable[bytes] = (),
        user: str | None = None,
    ) -> None:
        self.append_many([raw], folder, flags, user)

    def append_many(
        self,
        raws: Iterable[bytes],
        folder: str = "INBOX",
        flags: Iterable[bytes] = (),
        user: str | None = None,
    ) -> None:
        with self.client(user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            for raw in raws:
                client.append(folder, raw, flags=tuple(flags))

    def folders(self, user: str | None = None) -> list[str]:
        with self.client(user) as client:
            return sorted(name for _, _, name in client.list_folders())

    def separator(self, user: str | None = None) -> str:
        with self.client(user) as client:
            return client.namespace().personal[0][1]

    def messages(self, folder: str = "INBOX", user: str | None = None) -> list[bytes]:
        """Every message's bytes, in UID order, without setting \\Seen."""
        with self.client(user) as client:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            uids = sorted(client.search(["ALL"]))
            if not uids:
                return []
            fetched = client.fetch(uids, [b"BODY.PEEK[]"])
            return [fetched[uid][b"BODY[]"] for uid in uids]

    def flags(self, folder: str = "INBOX", user: str | None = None) -> list[tuple[bytes, ...]]:
        with self.client(user) as client:
            client.select_folder(folder, readonly=True)
            uids = sorted(client.search(["ALL"]))
            fetched = client.get_flags(uids) if uids else {}
            return [tuple(fetched[uid]) for uid in uids]

    def uidvalidity(self, folder: str = "INBOX", user: str | None = None) -> int:
        with self.client(user) as client:
            return int(client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"])

    def wipe(self, user: str | None = None) -> None:
        """Back to an empty INBOX and no other folder, over IMAP (safe with sessions still open)."""
        with self.client(user) as client:
            names = [name for _, _, name in client.list_folders()]
            for name in sorted(names, key=len, reverse=True):
                if name.upper() == "INBOX":
                    continue
                try:
                    client.delete_folder(name)
                except IMAPClient.Error as exc:  # a parent that only existed through its child
                    if b"NONEXISTENT" not in str(exc).encode():
                        raise
            client.select_folder("INBOX")
            if client.search(["ALL"]):
                client.set_flags("1:*", [b"\\Deleted"], silent=True)
                client.expunge()
