"""A real Dovecot whose consumer is on holiday: LDA delivery with a Pigeonhole Sieve vacation.

Built on tests/dovecot.py (same throwaway instance, own port and folder) plus what a mail host
adds to deliver and auto-reply: `dovecot-lda` as the delivery agent (Debian's dovecot-core; no
LMTP package needed) with the `sieve` plugin, and `submission_host` pointing at the tests' SMTP
relay, so the vacation replies Pigeonhole writes are sent over SMTP like on a real server.

    server = VacationDovecot(submission_port=relay_port)
    server.start()
    server.set_vacation("anna.koch@example.org", days=1, ...)
    server.deliver("anna.koch@example.org", sender="support@example.com", raw=...)
"""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path

from dovecot import DOVECONF, Dovecot

LDA = "/usr/lib/dovecot/dovecot-lda"
SIEVE_PLUGIN = "/usr/lib/dovecot/modules/lib90_sieve_plugin.so"

CONSUMER = "anna.koch@example.org"

EXTRA = """
# -- tests/vacation.py: delivery by dovecot-lda with Sieve, replies submitted to the test relay
hostname = mx.example.org
postmaster_address = postmaster@example.org
submission_host = 127.0.0.1:{submission_port}
lda_mailbox_autocreate = yes
protocol lda {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}
"""

VACATION_SCRIPT = """\
require ["vacation"];
vacation :days {days} :subject "{subject}" :addresses ["{address}"] "{body}";
"""


def missing() -> str | None:
    """Why this machine cannot run the vacation Dovecot, or None."""
    for path, package in ((LDA, "dovecot-core"), (SIEVE_PLUGIN, "dovecot-sieve")):
        if not os.path.exists(path):
            return f"{path} is not installed (Debian package {package})"
    return None


class VacationDovecot(Dovecot):
    """tests/dovecot.py's instance plus LDA + Sieve; the consumer's mailbox is the second user."""

    users = {"support@example.com": "secret", CONSUMER: "holiday"}

    def __init__(self, submission_port: int, root: Path | None = None) -> None:
        self.submission_port = submission_port
        super().__init__(root=root)

    def _write_config(self) -> None:
        super()._write_config()
        with self.conf.open("a") as conf:
            conf.write(EXTRA.format(submission_port=self.submission_port))
        check = subprocess.run(
            [DOVECONF, "-n", "-c", str(self.conf)], capture_output=True, text=True, timeout=30
        )
        if check.returncode != 0:
            raise RuntimeError(f"doveconf rejects {self.conf}: {check.stderr.strip()}")

    def home(self, user: str) -> Path:
        local, _, domain = user.partition("@")
        return self.root / "home" / domain / local

    def set_vacation(self, user: str, *, days: int, subject: str, body: str) -> Path:
        """Write and activate `user`'s Sieve script: a vacation reply at most every `days`."""
        home = self.home(user)
        scripts = home / "sieve"
        scripts.mkdir(parents=True, exist_ok=True)
        script = scripts / "vacation.sieve"
        script.write_text(
            VACATION_SCRIPT.format(days=days, subject=subject, address=user, body=body)
        )
        active = home / ".dovecot.sieve"
        if active.is_symlink() or active.exists():
            active.unlink()
        active.symlink_to("sieve/vacation.sieve")
        if os.geteuid() == 0:  # the mail user compiles the script next to it
            mail = pwd.getpwnam("nobody")
            for path in (home.parent, home, scripts, script):
                os.chown(path, mail.pw_uid, mail.pw_gid)
            os.lchown(active, mail.pw_uid, mail.pw_gid)
        return script

    def deliver(self, user: str, *, sender: str, raw: bytes, recipient: str | None = None) -> None:
        """Hand one message to dovecot-lda for `user`, as an MTA's final delivery does.

        `sender` is the envelope sender ("" for the null sender <>); the user's Sieve script
        runs, and a vacation reply goes out through submission_host before this returns.
        """
        command = [LDA, "-c", str(self.conf), "-d", user, "-f", sender or "<>"]
        command += ["-a", recipient or user]
        done = subprocess.run(command, input=raw, capture_output=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(
                f"dovecot-lda exited {done.returncode} delivering to {user}: "
                f"{done.stderr.decode(errors='replace').strip()} | {self.log_text()[-2000:]}"
            )
