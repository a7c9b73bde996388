"""Fuzzing intake: whatever arrives, every item ends as a case, an entry on one, a duplicate, or
set aside for a human with a reason, the queue goes on, and nothing is an internal error.

Two kinds of input: a few thousand mutants of the real mails in tests/data (cut, spliced,
re-encoded, with headers doubled, dropped or mangled; generated here from a fixed seed), and
hypothesis' own search over header and body values.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import write_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from daemon import config as configmod
from daemon.app import App
from daemon.clock import MovableClock
from daemon.maildirs import deliver_to_maildir
from daemon.store.models import SourceItem

DATA = Path(__file__).parent / "data"
MUTANTS = 2000
SEED = 20261204
OUTCOMES = {"ticket", "entry", "duplicate", "quarantined", "ignored"}
HEADERS = [b"From", b"To", b"Subject", b"Message-ID", b"In-Reply-To", b"References", b"Date",
           b"Content-Type", b"Content-Transfer-Encoding", b"Reply-To", b"Sender",
           b"Auto-Submitted", b"MIME-Version", b"Content-Disposition"]  # fmt: skip
JUNK = [b"\x00", b"\xff\xfe", b"=?", b"?=", b"=?utf-8?b?", b"=?gbk?q?=D6=D0", b"\r", b"\n",
        b"\r\n\r\n", b"--", b"boundary=", b'"', b"<", b">", b"@", b";", b"\t", b" " * 200,
        "中文".encode(), "中文".encode("gbk"), "繁體".encode("big5"), b"\xe4\xb8", b"=\r\n",
        b"charset=", b"base64", b"=XX", b"\x1b$B"]  # fmt: skip


def originals() -> list[bytes]:
    return [p.read_bytes() for p in sorted(DATA.rglob("*.eml"))]


def unique(raw: bytes, i: int) -> bytes:
    """The mail with a Message-ID of its own (mutants of one original are not duplicates)."""
    found = re.subn(
        rb"(?im)^message-id:[^\r\n]*", f"Message-ID: <fuzz-{i}@example.net>".encode(), raw, count=1
    )
    return found[0] if found[1] else f"Message-ID: <fuzz-{i}@example.net>\r\n".encode() + raw


def mutate(raw: bytes, rng: random.Random, pool: list[bytes]) -> bytes:
    """One to four random edits of a real mail."""
    for _ in range(rng.randint(1, 4)):
        how = rng.randrange(9)
        at = rng.randrange(len(raw) + 1)
        if how == 0:  # cut it short
            raw = raw[:at]
        elif how == 1:  # junk in
            raw = raw[:at] + rng.choice(JUNK) * rng.randint(1, 3) + raw[at:]
        elif how == 2:  # a span out
            raw = raw[:at] + raw[at + rng.randint(1, 200) :]
        elif how == 3:  # spliced with another mail
            other = rng.choice(pool)
            raw = raw[:at] + other[rng.randrange(len(other) + 1) :]
        elif how == 4:  # a header doubled, with a value of junk
            name = rng.choice(HEADERS)
            raw = name + b": " + rng.choice(JUNK) + b"\r\n" + raw
        elif how == 5:  # a header dropped
            name = rng.choice(HEADERS)
            raw = b"\n".join(
                line for line in raw.split(b"\n") if not line.lower().startswith(name.lower())
            )
        elif how == 6:  # line ends changed
            raw = raw.replace(b"\r\n", b"\n") if rng.random() < 0.5 else raw.replace(b"\n", b"\r\n")
        elif how == 7:  # bytes flipped
            data = bytearray(raw)
            for _ in range(rng.randint(1, 10)):
                if data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
            raw = bytes(data)
        else:  # a stray line before the headers, as forwarding clients write
            raw = (
                rng.choice([b"---- Original email message ----\r\n", b">From x\r\n", b"\r\n"]) + raw
            )
    return raw


@pytest.fixture
def app(tmp_path: Path, clock: MovableClock) -> Iterator[App]:
    """An App on the embedded SQLite (the storage is not what is fuzzed here)."""
    body = '[intake]\nack_max_age = "36500 days"\n'
    made = App(configmod.load(write_config(tmp_path, body)), clock=clock)
    yield made
    made.close()


def take_in(app: App, raws: list[bytes]) -> Counter[str]:
    """Deliver, take in until dry; the outcomes of these items. Nothing may be an internal
    error, nothing may stay in new/."""
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    with app.reads() as session:
        before = session.scalar(select(func.max(SourceItem.id))) or 0
    for raw in raws:
        deliver_to_maildir(inbox, raw)
    while app.intake.run_once().work_done:
        pass
    with app.reads() as session:
        rows = session.execute(
            select(SourceItem.outcome, SourceItem.reason).where(SourceItem.id > before)
        ).all()
    internal = [reason for outcome, reason in rows if "internal error" in (reason or "")]
    assert internal == [], internal[:5]
    assert not list((inbox / "new").iterdir())  # nothing stuck: the queue went on
    return Counter(outcome for outcome, _ in rows)


def test_thousands_of_mutated_real_mails_each_end_as_a_case_or_set_aside(app: App) -> None:
    rng = random.Random(SEED)
    pool = originals()
    raws = [mutate(unique(rng.choice(pool), i), rng, pool) for i in range(MUTANTS)]
    outcomes = take_in(app, raws)
    assert sum(outcomes.values()) == MUTANTS and set(outcomes) <= OUTCOMES
    quarantine = app.config.mailboxes[0].quarantine_path
    assert quarantine is not None
    kept = len(list((quarantine / "new").iterdir())) if (quarantine / "new").exists() else 0
    assert kept == outcomes["quarantined"] + outcomes["ignored"]  # each kept for a human
    print(f"{MUTANTS} mutants: {dict(outcomes)}")


header_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=80
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sender=header_text,
    subject=header_text,
    body=st.binary(max_size=400),
    charset=st.sampled_from(["utf-8", "gbk", "gb2312", "big5", "shift_jis", "latin-1", "x-junk"]),
    encoding=st.sampled_from(["8bit", "base64", "quoted-printable", "7bit", "x-junk"]),
)
def test_any_header_and_body_values_end_as_a_case_or_set_aside(
    app: App, sender: str, subject: str, body: bytes, charset: str, encoding: str
) -> None:
    head = (
        f"From: {sender}\r\nTo: support@example.com\r\nSubject: {subject}\r\n"
        f"Content-Type: text/plain; charset={charset}\r\nContent-Transfer-Encoding: {encoding}\r\n"
        "\r\n"
    ).encode("utf-8", "surrogateescape")
    outcomes = take_in(app, [head + body])
    assert sum(outcomes.values()) == 1 and set(outcomes) <= OUTCOMES
