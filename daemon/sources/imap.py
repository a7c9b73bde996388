"""An IMAP mailbox as a source: batched fetch, settle after commit, IDLE, reconnect with backoff."""

from __future__ import annotations

import contextlib
import imaplib
import logging
import random
import re
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from imapclient import DELETED, SEEN, IMAPClient
from imapclient.exceptions import LoginError
from imapclient.response_parser import parse_response

from daemon import log as logfmt
from daemon.config import MailboxConfig
from daemon.items import Incoming

log = logging.getLogger("caseloop.imap")

SET_ASIDE = ("quarantined", "ignored")  # go to quarantine_folder; every other outcome is processed
COMMAND_TIMEOUT = 60.0  # seconds of silence on the socket before a command counts as failed
FETCH_CHUNK = 100  # UIDs per FETCH round trip
STORE_CHUNK = 500  # UIDs per MOVE / COPY / STORE round trip
IDLE_RENEW = 25 * 60.0  # RFC 2177: servers may drop an IDLE after 30 minutes; renew well before
SKIP_FOR = 3600.0  # a message the server refused to move is offered again after this long
IDLE_SLICE = 0.25  # how often a waiting IDLE looks at wake() and its deadline
# Everything that means "the connection or the server failed": socket errors and timeouts are
# OSError; imaplib.IMAP4.error is the base of every imapclient exception (NO, BAD, abort, login).
NETWORK_ERRORS: tuple[type[BaseException], ...] = (OSError, imaplib.IMAP4.error, EOFError)


_BYTES_REPR = re.compile(r"""^b(['"])(.*)\1$""")


class _Backoff(Exception):
    """Not connected, and the next attempt is not due yet."""


class PasswordUnavailable(LoginError):
    """password_file, password_env or password_command gave nothing usable."""


def uid_set(uids: Iterable[int]) -> str:
    """Compress UIDs into an IMAP sequence set: 1,2,3,7,9,10 -> "1:3,7,9:10"."""
    ordered = sorted(set(uids))
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}:{ordered[j]}")
        i = j + 1
    return ",".join(parts)


def _chunks(items: Sequence[int], size: int) -> Iterable[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def parse_key(key: str) -> tuple[str, int, int]:
    """Split a key: "INBOX:1700000000:42" -> ("INBOX", 1700000000, 42); folders may hold ":"."""
    folder, validity, uid = key.rsplit(":", 2)
    return folder, int(validity), int(uid)


class ImapSource:
    """One [[mailboxes]] entry of type imap: new mail in `folder`, keyed folder:UIDVALIDITY:UID.

    Meant for one thread that polls and waits; `wake()`, `backlog()` and `close()` are safe to
    call from others.
    """

    def __init__(
        self,
        config: MailboxConfig,
        *,
        timeout: float = COMMAND_TIMEOUT,
        backoff_initial: float = 1.0,
        backoff_max: float = 300.0,
        idle_renew: float = IDLE_RENEW,
        fetch_chunk: int = FETCH_CHUNK,
    ) -> None:
        if config.type != "imap" or not config.host:
            raise ValueError(f"mailbox {config.name!r} is not an IMAP mailbox")
        self.config = config
        self.name = config.name
        self.timeout = timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.idle_renew = idle_renew
        self.fetch_chunk = fetch_chunk
        self.last_error: str | None = None  # the reason of the current outage, None when up
        self._client: IMAPClient | None = None
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._selected: int | None = None  # UIDVALIDITY of `folder` while it is selected
        self._last_uidvalidity: int | None = None
        self._delimiter: str | None = None
        self._ensured: set[str] = set()  # server folder names known to exist
        self._skip: dict[str, float] = {}  # key -> when to offer again (settle was refused)
        self._peeked: dict[str, bytes] = {}  # key -> body read ahead by peek, for the next fetch
        self._maybe_more = True  # the last fetch returned mail: there may be more already
        self._searched = False  # a SEARCH ran since the last SELECT (IDLE tells what is newer)
        self._waiting = 0  # candidates seen by the last SEARCH or STATUS
        self._down_since: float | None = None
        self._attempts = 0
        self._retry_at = 0.0

    # -- the Source protocol ----------------------------------------------------------------

    def describe(self) -> str:
        c = self.config
        processed = c.processed_folder or "flag \\Seen"
        mode = "IDLE" if c.idle else "poll"
        return (
            f"imap {c.host}:{c.port} ({c.security}) {c.username} {c.folder}"
            f" -> {processed}, set aside -> {c.quarantine_folder}, {mode}"
        )

    def check(self) -> str:
        """What check-config reports: log in on a fresh connection and count what waits."""
        try:
            client = self._connect()
        except Exception as exc:  # noqa: BLE001 - check-config reports, never raises
            return f"FAILED: {self._reason(exc)}"
        try:
            waiting = self._status(client)
            return f"ok, {waiting} message(s) waiting in {self.config.folder}"
        except Exception as exc:  # noqa: BLE001
            return f"FAILED: {self._reason(exc)}"
        finally:
            self._discard(client, logout=True)

    def backlog(self) -> int:
        """Messages waiting in `folder`; the last known count while busy or unreachable."""
        if not self._lock.acquire(blocking=False):
            return self._waiting
        try:
            client = self._session()
            self._waiting = self._status(client)
        except _Backoff:
            pass
        except NETWORK_ERRORS as exc:
            self._failed(exc)
        finally:
            self._lock.release()
        return self._waiting

    def fetch(self, limit: int) -> list[Incoming]:
        """Up to `limit` new messages, lowest UID first, FETCHed in chunks with BODY.PEEK[]."""
        if limit <= 0:
            return []
        with self._lock:
            try:
                client = self._session()
            except _Backoff:
                return []
            try:
                return self._fetch(client, limit)
            except NETWORK_ERRORS as exc:
                self._failed(exc)
                return []

    def peek(self, limit: int, after: str | None) -> list[Incoming]:
        """Like fetch, from the first UID after the item keyed `after` (a dry run reads on
        without settling); a network failure raises, as a command run by hand should."""
        after_uid = int(after.rpartition(":")[2]) if after else 0
        with self._lock:
            try:
                client = self._session()
            except _Backoff:
                raise OSError(f"{self.describe()}: {self.last_error or 'not reachable'}") from None
            try:
                items = self._fetch(client, limit, after_uid)
            except NETWORK_ERRORS as exc:
                self._failed(exc)  # the connection is not reused half-read
                raise
            # The next fetch takes these bodies from here instead of the server: a UID under
            # one UIDVALIDITY always names the same message (RFC 3501).
            self._peeked = {item.key: item.raw for item in items}
            return items

    def settle(self, item: Incoming, outcome: str) -> None:
        self.settle_batch([(item, outcome)])

    def settle_batch(self, settled: list[tuple[Incoming, str]]) -> None:
        """After commit: one round trip per outcome group (per STORE_CHUNK UIDs).

        Processed mail moves to `processed_folder` (or is flagged \\Seen when that is ""),
        quarantined and ignored mail to `quarantine_folder`. If the server cannot be reached the
        mail stays where it is; the next fetch returns it, the database knows its key, and it is
        settled then without being processed twice.
        """
        if not settled:
            return
        with self._lock:
            try:
                client = self._session()
            except _Backoff:
                return
            try:
                self._settle(client, settled)
            except NETWORK_ERRORS as exc:
                self._failed(exc)

    def wait_for_mail(self, timeout: float) -> bool:
        """Block until the server announces new mail (True) or `timeout` seconds pass (False).

        With `idle = true` and a server that offers IDLE this returns within moments of the
        server's notification; otherwise it just sleeps. `wake()` ends a wait early (False).
        Returns True at once when mail may be waiting already: the last fetch found some, or
        the server announced some after the last SEARCH (see _idle_until).
        """
        deadline = time.monotonic() + max(0.0, timeout)
        if self._wake.is_set():
            self._wake.clear()
            return False
        if self._maybe_more:
            return True
        if self.config.idle:
            with self._lock:
                announced = self._idle_until(deadline)
            if announced is not None:
                return announced
        until = min(deadline, self._retry_at) if self._down_since is not None else deadline
        if self._wake.wait(max(0.0, until - time.monotonic())):
            self._wake.clear()
        return False

    def wake(self) -> None:
        """Make the current or next wait_for_mail return promptly (e.g. on shutdown)."""
        self._wake.set()

    def close(self) -> None:
        self._wake.set()  # an IDLE in another thread lets go of the lock within IDLE_SLICE
        with self._lock:
            client, self._client = self._client, None
            self._selected = None
        if client is not None:
            self._discard(client, logout=True)

    # -- connection and outages -----------------------------------------------------------

    def _connect(self) -> IMAPClient:
        """A fresh, logged-in connection; raises on any failure."""
        c = self.config
        assert c.host is not None
        context = ssl.create_default_context()
        client = IMAPClient(
            c.host,
            c.port,
            ssl=c.security == "tls",
            ssl_context=context if c.security == "tls" else None,
            timeout=self.timeout,
        )
        try:
            if c.security == "starttls":
                client.starttls(context)
            try:
                password = c.password.read()
            except Exception as exc:  # noqa: BLE001 - file, env or command: report, don't leak
                raise PasswordUnavailable(f"{type(exc).__name__}: {exc}") from None
            if password is None:
                raise PasswordUnavailable("none of password_file, password_env, password_command")
            client.login(c.username or c.address, password)
        except BaseException:
            self._discard(client, logout=False)
            raise
        return client

    def _session(self) -> IMAPClient:
        """The live connection, reconnecting when the backoff allows; raises _Backoff if not."""
        if self._client is not None:
            return self._client
        if time.monotonic() < self._retry_at:
            raise _Backoff
        try:
            self._client = self._connect()
        except NETWORK_ERRORS as exc:
            self._failed(exc)
            raise _Backoff from None
        self._delimiter = None
        self._ensured.clear()
        if self._down_since is not None:
            logfmt.event(
                log,
                "imap.reconnected",
                source=self.name,
                host=self.config.host,
                port=self.config.port,
                down_for=f"{time.monotonic() - self._down_since:.1f}s",
                attempts=self._attempts,
            )
        self._down_since, self._attempts, self._retry_at = None, 0, 0.0
        self.last_error = None
        return self._client

    def _failed(self, exc: BaseException) -> None:
        """Drop the connection; log once per outage; schedule the next attempt with jitter."""
        client, self._client = self._client, None
        self._selected = None
        self._maybe_more = False  # wait_for_mail sleeps out the backoff instead of spinning
        if client is not None:
            self._discard(client, logout=False)
        self.last_error = self._reason(exc)
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
            logfmt.event(
                log,
                "imap.unreachable",
                logging.WARNING,
                source=self.name,
                host=self.config.host,
                port=self.config.port,
                error=self.last_error,
            )
        else:
            log.debug("event=imap.retry_failed source=%s error=%s", self.name, self.last_error)
        self._attempts += 1
        delay = min(self.backoff_max, self.backoff_initial * 2 ** (self._attempts - 1))
        self._retry_at = now + delay * random.uniform(0.5, 1.0)

    def _reason(self, exc: BaseException) -> str:
        """One line for the operator: what failed and what the server or the system said."""
        where = f"{self.config.host}:{self.config.port}"
        arg = exc.args[0] if exc.args else ""
        said = arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg or exc)
        said = _BYTES_REPR.sub(r"\2", said)  # imapclient words some replies as "b'...'"
        if isinstance(exc, PasswordUnavailable):
            return f"cannot read the password: {said}"
        if isinstance(exc, LoginError):
            return f"login as {self.config.username} refused: {said}"
        if isinstance(exc, imaplib.IMAP4.abort):
            return f"connection to {where} lost: {said}"
        if isinstance(exc, imaplib.IMAP4.error):
            return f"{where} said: {said}"
        if isinstance(exc, TimeoutError):
            return f"{where}: no answer within {self.timeout:g} s"
        if isinstance(exc, ssl.SSLError):
            return f"{where}: TLS failed: {exc}"
        if isinstance(exc, OSError):
            return f"cannot reach {where}: {exc.strerror or exc}"
        return f"{type(exc).__name__}: {exc}"

    @staticmethod
    def _discard(client: IMAPClient, logout: bool) -> None:
        """Close a connection that is going away anyway; a polite LOGOUT when asked."""
        if logout:
            with contextlib.suppress(Exception):
                client.logout()
                return
        with contextlib.suppress(Exception):
            client.shutdown()

    # -- folders --------------------------------------------------------------------------

    def _server_folder(self, client: IMAPClient, name: str) -> str:
        """Config names use "/" between levels; the server may use another delimiter (".")."""
        if self._delimiter is None:
            listed = client.list_folders("", "")
            delim: Any = listed[0][1] if listed else "/"
            if isinstance(delim, bytes):
                delim = delim.decode("ascii", "replace")
            self._delimiter = delim or "/"
        if self._delimiter != "/":
            return name.replace("/", self._delimiter)
        return name

    def _ensure_folder(self, client: IMAPClient, name: str) -> str:
        folder = self._server_folder(client, name)
        if folder in self._ensured:
            return folder
        if not client.folder_exists(folder):
            try:
                client.create_folder(folder)
            except IMAPClient.AbortError:
                raise
            except IMAPClient.Error:
                if not client.folder_exists(folder):  # not made meanwhile by someone else
                    raise
            else:
                logfmt.event(log, "imap.folder_created", source=self.name, folder=name)
            try:
                client.subscribe_folder(folder)
            except IMAPClient.AbortError:
                raise
            except IMAPClient.Error:
                pass  # subscriptions only help people browsing the mailbox
        self._ensured.add(folder)
        return folder

    def _select(self, client: IMAPClient) -> int:
        response = client.select_folder(self._server_folder(client, self.config.folder))
        _announced_since(client)  # the SEARCH that follows sees what SELECT counted
        self._searched = False
        validity = int(response[b"UIDVALIDITY"])
        if self._last_uidvalidity is not None and validity != self._last_uidvalidity:
            logfmt.event(
                log,
                "imap.uidvalidity_changed",
                logging.WARNING,
                source=self.name,
                folder=self.config.folder,
                old=self._last_uidvalidity,
                new=validity,
            )
        self._selected = self._last_uidvalidity = validity
        return validity

    def _status(self, client: IMAPClient) -> int:
        folder = self._server_folder(client, self.config.folder)
        what = b"UNSEEN" if self.config.processed_folder == "" else b"MESSAGES"
        return int(client.folder_status(folder, [what])[what])

    # -- fetch and settle -----------------------------------------------------------------

    def _key(self, validity: int, uid: int) -> str:
        return f"{self.config.folder}:{validity}:{uid}"

    def _fetch(self, client: IMAPClient, limit: int, after_uid: int = 0) -> list[Incoming]:
        validity = self._select(client)
        # \Seen mode keeps processed mail in the folder; otherwise processed mail has moved out.
        criteria = ["UNSEEN", "UNDELETED"] if self.config.processed_folder == "" else ["UNDELETED"]
        found = sorted(client.search(criteria))
        self._searched = True
        self._waiting = len(found)
        now = time.monotonic()
        self._skip = {key: until for key, until in self._skip.items() if until > now}
        uids = [
            uid for uid in found if uid > after_uid and self._key(validity, uid) not in self._skip
        ][:limit]
        held, self._peeked = self._peeked, {}
        items: list[Incoming] = []
        for chunk in _chunks(uids, self.fetch_chunk):
            wanted = [uid for uid in chunk if self._key(validity, uid) not in held]
            fetched = client.fetch(wanted, [b"BODY.PEEK[]"]) if wanted else {}
            for uid in chunk:
                raw = held.get(self._key(validity, uid)) or fetched.get(uid, {}).get(b"BODY[]")
                if raw is None:  # expunged by another client meanwhile
                    continue
                items.append(
                    Incoming(
                        source=self.name,
                        key=self._key(validity, uid),
                        raw=bytes(raw),
                        label=f"{self.config.folder} uid {uid}",
                    )
                )
        self._maybe_more = bool(items)
        return items

    def _target(self, outcome: str) -> str:
        """The folder an outcome goes to; "" means: flag \\Seen and leave it where it is."""
        if outcome in SET_ASIDE:
            return self.config.quarantine_folder or self.config.processed_folder
        return self.config.processed_folder

    def _settle(self, client: IMAPClient, settled: list[tuple[Incoming, str]]) -> None:
        validity = self._selected if self._selected is not None else self._select(client)
        groups: dict[str, list[int]] = {}
        stale = 0
        for item, outcome in settled:
            folder, item_validity, uid = parse_key(item.key)
            if folder != self.config.folder or item_validity != validity:
                stale += 1  # its UID means another message now; it is re-fetched under a new key
                continue
            groups.setdefault(self._target(outcome), []).append(uid)
        if stale:
            logfmt.event(
                log, "imap.settle_skipped", source=self.name, messages=stale, reason="uidvalidity"
            )
        for target, uids in groups.items():
            try:
                for chunk in _chunks(sorted(uids), STORE_CHUNK):
                    if target == "":
                        client.add_flags(uid_set(chunk), [SEEN], silent=True)
                    else:
                        self._move(client, uid_set(chunk), target)
            except IMAPClient.AbortError:
                raise
            except IMAPClient.Error as exc:
                # The server refused (NO/BAD), e.g. no right to write the folder: leave the mail,
                # stop offering it for a while so it cannot block the queue, tell the operator.
                until = time.monotonic() + SKIP_FOR
                self._skip.update((self._key(validity, uid), until) for uid in uids)
                logfmt.event(
                    log,
                    "imap.settle_failed",
                    logging.ERROR,
                    source=self.name,
                    folder=target or "\\Seen",
                    messages=len(uids),
                    error=str(exc),
                )

    def _move(self, client: IMAPClient, uids: str, target: str) -> None:
        folder = self._ensure_folder(client, target)
        if client.has_capability("MOVE"):
            try:
                client.move(uids, folder)
            except IMAPClient.AbortError:
                raise
            except IMAPClient.Error as exc:
                if "TRYCREATE" not in str(exc):
                    raise
                self._ensured.discard(folder)  # deleted behind our back: create it again
                client.move(uids, self._ensure_folder(client, target))
            return
        client.copy(uids, folder)
        client.add_flags(uids, [DELETED], silent=True)
        if client.has_capability("UIDPLUS"):
            client.uid_expunge(uids)
        else:
            client.expunge()  # also removes others' \Deleted mail; servers without UIDPLUS are rare

    # -- waiting --------------------------------------------------------------------------

    def _idle_until(self, deadline: float) -> bool | None:
        """IDLE until new mail (True), deadline or wake() (False); None if IDLE is impossible.

        Dovecot tells a session of each new message once: in the response to whatever command
        runs next, at the start of an IDLE, or during one. Mail that arrives while a batch is
        taken in is told in one of the first two ways, so both are looked at here; otherwise
        it would wait, unannounced, for the next poll.
        """
        try:
            client = self._session()
        except _Backoff:
            return None
        try:
            if not client.has_capability("IDLE"):
                return None
            if self._selected is None or not self._searched:
                return True  # (re)selected since the last SEARCH: mail may wait unsearched
            if _announced_since(client):
                return True  # told with the SEARCH, FETCH, MOVE or STATUS after the SELECT
            while True:
                client.idle()
                outcome = self._idle_once(client, deadline)
                _, responses = client.idle_done()
                if outcome or _announces_mail(responses):
                    return True
                if outcome is False:
                    return False
                # None: renew the IDLE (29-minute rule) or make sure the connection still lives
        except NETWORK_ERRORS as exc:
            self._failed(exc)
            return False

    def _idle_once(self, client: IMAPClient, deadline: float) -> bool | None:
        """Within one IDLE command: True on new mail, False on deadline or wake(), None to renew."""
        renew_at = time.monotonic() + self.idle_renew
        responses = _read_with_continuation(client)
        while True:
            if _announces_mail(responses):
                return True
            if any(r and r[0] == b"BYE" for r in responses):
                raise imaplib.IMAP4.abort("the server said BYE during IDLE")
            now = time.monotonic()
            if self._wake.is_set():
                self._wake.clear()
                return False
            if now >= deadline:
                return False
            if now >= renew_at:
                return None
            wait = min(IDLE_SLICE, deadline - now, renew_at - now)
            responses = client.idle_check(timeout=wait)
            if not responses and time.monotonic() - now < wait / 2:
                return None  # readable, yet no line: likely EOF, which DONE will reveal


def _announced_since(client: IMAPClient) -> bool:
    """Whether a `* N EXISTS` came with any command's response since the last call (or SELECT).

    imaplib keeps the untagged responses of every command until SELECT clears them; taking
    EXISTS out here marks the point from which the next call looks.
    """
    return bool(client._imap.untagged_responses.pop("EXISTS", None))


def _read_with_continuation(client: IMAPClient) -> list[Any]:
    """Untagged responses the server sent right behind IDLE's "+ idling".

    Dovecot announces mail that arrived since the last command as soon as IDLE starts, often
    in the same TCP segment as "+ idling". imaplib reads that segment into its buffer to find
    the "+" line; idle_check then waits for the socket to become readable and never looks in
    the buffer, so the announcement would sit there until the next one. Read what is there
    (and whatever else has arrived) without waiting for more.
    """
    imap = client._imap
    sock = client.socket()
    timeout = sock.gettimeout()
    responses: list[Any] = []
    while True:
        sock.setblocking(False)
        try:
            pending = imap.file.peek(1)  # the buffer, or what the socket holds right now
        except OSError:  # nothing buffered, nothing arrived (TLS says so by SSLWantReadError)
            pending = b""
        finally:
            sock.settimeout(timeout)
        if not pending:
            return responses
        responses.append(_parse_untagged(imap._get_line()))  # waits only for a line's rest


def _parse_untagged(line: bytes) -> Any:
    """b"* 3 EXISTS" -> (3, b"EXISTS"), b"* OK Still here" -> (b"OK", b"Still here"), as
    idle_check returns them."""
    if not line.startswith(b"* "):
        raise imaplib.IMAP4.abort(f"unexpected line during IDLE: {line[:80]!r}")
    text = line[2:]
    if text.startswith((b"OK ", b"NO ", b"BYE ")):
        return tuple(text.split(b" ", 1))
    return parse_response([text])


def _announces_mail(responses: Iterable[Any]) -> bool:
    """An untagged `* N EXISTS` is how a server says that new mail arrived."""
    return any(isinstance(r, tuple) and len(r) > 1 and r[1] == b"EXISTS" for r in responses)
