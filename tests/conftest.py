"""Shared fixtures: databases (SQLite and PostgreSQL), configs rooted in temp folders, a clock."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from daemon import config as configmod
from daemon.app import App
from daemon.clock import MovableClock
from daemon.items import Incoming
from daemon.store.models import Ticket
from handlers import pipeline
from handlers.context import Context

REQUIRE_SERVERS = os.environ.get("CASELOOP_REQUIRE_SERVERS") == "1"
PG_ADMIN_URL = os.environ.get(
    "CASELOOP_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
DATA = Path(__file__).parent / "data"


def server_missing(reason: str) -> None:
    """Skip with the reason, or fail when CI promised the servers are there."""
    if REQUIRE_SERVERS:
        pytest.fail(f"CASELOOP_REQUIRE_SERVERS=1 but {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def pg_server() -> str:
    if not _port_open("127.0.0.1", 5432):
        server_missing("PostgreSQL is not listening on 127.0.0.1:5432")
    try:
        engine = create_engine(PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable server
        server_missing(f"PostgreSQL at {PG_ADMIN_URL} is not usable: {exc}")
    return PG_ADMIN_URL


@pytest.fixture
def pg_schema_url(pg_server: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    schema = f"caseloop_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in pg_server else "?"
    yield f"{pg_server}{sep}options=-csearch_path%3D{schema}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs on the embedded SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'caseloop.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
def clock() -> MovableClock:
    # Tuesday 24 November 2026, 10:00 in Shanghai: a plain working day.
    return MovableClock(datetime(2026, 11, 24, 2, 0, tzinfo=UTC))


# One staff member, Wang (English mail), who gets every product-quality case.
QUALITY_DESK = """
[[staff]]
address = "wang@example.com"
groups = ["quality"]
language = "en"

[[routing]]
category = "product_quality"
group = "quality"
"""


def write_config(root: Path, body: str = "", db_url: str | None = None) -> Path:
    """A caseloop.toml in `root` with the embedded layout plus `body`."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ['data_dir = "caseloop-data"']
    if db_url:
        lines += ["[database]", f'url = "{db_url}"']
    if "[tickets]" not in body:
        # Registration completeness (a mail lacking essentials waits for them) is pinned by
        # its own tests; the rest are about other things and file short complaints.
        body += "\n[tickets]\nmail_essentials = []\n"
    path = root / "caseloop.toml"
    path.write_text("\n".join(lines) + "\n" + body, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """`main()` points the root logger at this test's captured stderr; later tests (and the
    session's SMTP and IMAP server threads) must not log into it once pytest has closed it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def imap_mailbox_toml(box: object, root: Path, name: str = "support") -> str:
    """A [[mailboxes]] entry for the test Dovecot's mailbox, its password in a file in root."""
    (root / "imap-password").write_text(box.password)  # type: ignore[attr-defined]
    return (
        "[[mailboxes]]\n"
        f'name = "{name}"\n'
        'type = "imap"\n'
        f'address = "{box.user}"\n'  # type: ignore[attr-defined]
        f'host = "{box.host}"\n'  # type: ignore[attr-defined]
        f"port = {box.port}\n"  # type: ignore[attr-defined]
        'security = "none"\n'
        'password_file = "imap-password"\n'
    )


@pytest.fixture
def make_app(tmp_path: Path, db_url: str, clock: MovableClock) -> Iterator[object]:
    """Build an App on the parametrised database (PostgreSQL migrated as an operator would)."""
    apps: list[App] = []

    def _make(body: str = "", root: Path | None = None) -> App:
        path = write_config(root or tmp_path, body, db_url)
        config = configmod.load(path)
        if not db_url.startswith("sqlite"):
            from daemon.store.db import make_engine, migrate

            engine = make_engine(config.database_url)
            migrate(engine)
            engine.dispose()
        app = App(config, clock=clock)
        apps.append(app)
        return app

    yield _make
    for app in apps:
        app.close()


class StepBench:
    """One deciding step at a time (tests/test_acknowledge.py ...): a fresh SQLite App and, per
    mail, the prepared item in a Context with an open session, as intake hands it to the steps.

    `bench(mail)` commits the previous mail's transaction, prepares `mail` (bytes or a
    message) and opens the next; `ticket` gives the context a case already on file.
    """

    def __init__(self, root: Path, clock: MovableClock) -> None:
        self.root, self.clock = root, clock
        self._app: App | None = None
        self._open = ExitStack()  # the open context's transaction

    def configure(self, body: str = "") -> App:
        assert self._app is None, "configure before the first mail"
        self._app = App(configmod.load(write_config(self.root, body)), clock=self.clock)
        return self._app

    @property
    def app(self) -> App:
        return self._app or self.configure()

    @staticmethod
    def mail(sender: str, body: str, subject: str = "Kettle", **headers: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = sender, "support@example.com", subject
        msg["Message-ID"] = headers.pop("message_id", f"<{uuid.uuid4().hex}@example.org>")
        for name, value in headers.items():
            msg[name.replace("_", "-")] = value
        msg.set_content(body)
        return msg

    def __call__(self, mail: bytes | EmailMessage, ticket: int | None = None) -> Context:
        app = self.app
        self.commit()
        raw = mail if isinstance(mail, bytes) else mail.as_bytes()
        item = Incoming(source="t", key=uuid.uuid4().hex, raw=raw, label="t")
        prep = pipeline.prepare(item, app.config, app.blobs)
        session = self._open.enter_context(app.sessions.begin())
        found = session.get(Ticket, ticket) if ticket is not None else None
        return Context(prep=prep, services=app.services, session=session, clock=self.clock,
                       now=self.clock.now(), ticket=found)  # fmt: skip

    def commit(self) -> None:
        """Commit the open context's transaction (the next mail, or a read, comes after it)."""
        self._open.close()

    def close(self) -> None:
        self.commit()
        if self._app is not None:
            self._app.close()


@pytest.fixture
def step_ctx(tmp_path: Path, clock: MovableClock) -> Iterator[StepBench]:
    """A factory of deciding-step contexts on a fresh SQLite app (see StepBench)."""
    bench = StepBench(tmp_path, clock)
    yield bench
    bench.close()


class SmtpSink:
    """A real aiosmtpd server on loopback that keeps what it receives.

    Recipients listed in `refuse` get that SMTP reply at RCPT time (e.g. "450 try later").
    """

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], bytes]] = []
        self.refuse: dict[str, str] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001,ANN201,N802
        if address.lower() in self.refuse:
            return self.refuse[address.lower()]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001,ANN201,N802
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[tuple[SmtpSink, int]]:
    from aiosmtpd.controller import Controller

    sink = SmtpSink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    yield sink, port
    controller.stop()


@pytest.fixture
def smtp_sink(smtp_server: tuple[SmtpSink, int]) -> tuple[SmtpSink, int]:
    sink, port = smtp_server
    sink.messages.clear()
    sink.refuse.clear()
    return sink, port


@pytest.fixture
def relay() -> Iterator[object]:
    """The network between caseloop and the people it writes to (tests/relay.py): a real
    aiosmtpd on loopback that routes each recipient's copy to a mailbox or a robot."""
    from relay import Relay

    server = Relay()
    server.start()
    yield server
    server.stop()


# -- Dovecot: the real IMAP peer (helpers in tests/dovecot.py) ------------------------------


@pytest.fixture(scope="session")
def dovecot() -> Iterator[object]:
    """One Dovecot per session on a free loopback port, from a config in a temp folder."""
    from dovecot import DOVECOT, Dovecot

    if not os.path.exists(DOVECOT):
        server_missing(f"Dovecot is not installed ({DOVECOT}; Debian package dovecot-imapd)")
    server = Dovecot()
    try:
        server.start()
    except RuntimeError as exc:
        server.remove()
        pytest.fail(f"Dovecot is installed but would not start: {exc}")
    yield server
    server.remove()


@pytest.fixture
def imap_box(dovecot: object) -> object:
    """The session's Dovecot, running, with every user's mailbox empty (INBOX only)."""
    from dovecot import Dovecot

    assert isinstance(dovecot, Dovecot)
    dovecot.start()  # a test may have left it stopped
    for user in dovecot.users:
        dovecot.wipe(user)
    return dovecot
