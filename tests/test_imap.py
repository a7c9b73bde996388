"""The IMAP source on a real Dovecot: batches, MOVE and \\Seen modes, UIDVALIDITY, outages, IDLE."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import imap_mailbox_toml
from dovecot import Dovecot
from imapclient import IMAPClient
from sqlalchemy import func, select

from daemon.app import App
from daemon.config import MailboxConfig, Secret
from daemon.sources.imap import ImapSource, parse_key, uid_set
from daemon.store.models import OutboxMessage, Ticket

DATA = Path(__file__).parent / "data"
Factory = Callable[..., ImapSource]


def message(i: int, size: int = 0) -> bytes:
    """A CRLF message with 8-bit UTF-8 text, optionally padded to about `size` bytes."""
    body = f"第 {i} 号投诉：产品有质量问题。\r\nComplaint number {i}.\r\n"
    padding = "".join(f"{n:08d} 填充内容 padding\r\n" for n in range(size // 32))
    return (
        f"From: Consumer {i} <c{i}@example.cn>\r\n"
        "To: support@example.com\r\n"
        f"Subject: =?UTF-8?B?5oqV6K+J?= {i}\r\n"
        f"Message-ID: <imap-test-{i}@example.cn>\r\n"
        "Date: Tue, 24 Nov 2026 09:00:00 +0800\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n" + body + padding
    ).encode()


def corpus(name: str) -> bytes:
    """A corpus mail as an MTA would deliver it: CRLF line ends."""
    return (DATA / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture
def make_source(imap_box: Dovecot, tmp_path: Path) -> Iterator[Factory]:
    """ImapSource on the test mailbox; keyword arguments override MailboxConfig fields."""
    secret = tmp_path / "imap-password"
    secret.write_text(imap_box.password + "\n")
    made: list[ImapSource] = []

    def _make(
        backoff_initial: float = 1.0, backoff_max: float = 300.0, **fields: Any
    ) -> ImapSource:
        values: dict[str, Any] = {
            "name": "support",
            "type": "imap",
            "address": imap_box.user,
            "host": imap_box.host,
            "port": imap_box.port,
            "security": "none",
            "username": imap_box.user,
            "password": Secret(file=secret),
            "processed_folder": "caseloop/processed",
            "quarantine_folder": "caseloop/quarantine",
        }
        values.update(fields)
        source = ImapSource(
            MailboxConfig(**values),
            timeout=10,
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
        )
        made.append(source)
        return source

    yield _make
    for source in made:
        source.close()


@pytest.fixture
def imap_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts of IMAP commands sent by any IMAPClient (FETCH, MOVE, COPY, ...), by method."""
    counts: dict[str, int] = {}
    for method in ("fetch", "move", "copy", "add_flags", "uid_expunge", "expunge", "idle"):
        original = getattr(IMAPClient, method)

        def counting(
            self: IMAPClient, *args: Any, _m: str = method, _o: Any = original, **kwargs: Any
        ) -> Any:
            counts[_m] = counts.get(_m, 0) + 1
            return _o(self, *args, **kwargs)

        monkeypatch.setattr(IMAPClient, method, counting)
    return counts


def processed(box: Dovecot) -> str:
    return f"caseloop{box.separator()}processed"


def quarantine(box: Dovecot) -> str:
    return f"caseloop{box.separator()}quarantine"


def test_uid_sets_are_compressed_into_ranges() -> None:
    assert uid_set([7, 1, 2, 3, 9, 10]) == "1:3,7,9:10"
    assert parse_key("Shop:Complaints:1700000000:42") == ("Shop:Complaints", 1700000000, 42)


def test_250_messages_arrive_intact_in_three_fetch_round_trips(
    imap_box: Dovecot, make_source: Factory, imap_calls: dict[str, int]
) -> None:
    raws = [message(i, size=(i % 7) * 20_000) for i in range(250)]
    imap_box.append_many(raws)
    source = make_source()
    imap_calls.clear()

    items = source.fetch(300)

    assert imap_calls == {"fetch": 3}  # 100 UIDs per FETCH, never one per message
    assert [i.raw for i in items] == raws  # lowest UID first, every byte as appended
    validity = imap_box.uidvalidity()
    uids = [parse_key(i.key)[2] for i in items]
    assert uids == sorted(uids) and len(set(uids)) == 250
    assert {parse_key(i.key)[:2] for i in items} == {("INBOX", validity)}
    assert items[0].label == f"INBOX uid {uids[0]}"
    assert all(b"\\Seen" not in flags for flags in imap_box.flags())  # BODY.PEEK[]: still unseen


def test_a_batch_read_ahead_is_not_fetched_again(
    imap_box: Dovecot, make_source: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Intake peeks at the next batch while it decides one (daemon/prepare.py); the fetch
    after it takes those bodies from the peek, and FETCHes only what the peek did not hold."""
    raws = [message(i) for i in range(8)]
    imap_box.append_many(raws)
    source = make_source()
    first = source.fetch(3)
    ahead = source.peek(3, first[-1].key)
    source.settle_batch([(item, "ticket") for item in first])
    asked: list[int] = []  # the UIDs each FETCH asks the server for
    original = IMAPClient.fetch

    def fetch(self: IMAPClient, uids: list[int], *args: Any, **kwargs: Any) -> Any:
        asked.extend(uids)
        return original(self, uids, *args, **kwargs)

    monkeypatch.setattr(IMAPClient, "fetch", fetch)

    items = source.fetch(5)

    assert [i.raw for i in items] == raws[3:8]
    assert [i.key for i in items[:3]] == [i.key for i in ahead]
    assert asked == [parse_key(i.key)[2] for i in items[3:]]  # the two the peek did not hold
    asked.clear()
    assert source.fetch(5) == items  # still unsettled: all five FETCHed again, nothing held
    assert len(asked) == 5


def test_fetch_honours_the_limit_lowest_uids_first(imap_box: Dovecot, make_source: Factory) -> None:
    raws = [message(i) for i in range(5)]
    imap_box.append_many(raws)
    assert [i.raw for i in make_source().fetch(2)] == raws[:2]


def test_move_mode_empties_the_inbox_into_a_processed_folder_created_on_demand(
    imap_box: Dovecot, make_source: Factory, imap_calls: dict[str, int]
) -> None:
    raws = [message(i) for i in range(5)]
    imap_box.append_many(raws)
    source = make_source()
    items = source.fetch(10)
    assert processed(imap_box) not in imap_box.folders()
    imap_calls.clear()

    outcomes = ["ticket", "entry", "duplicate", "ticket", "entry"]
    source.settle_batch(list(zip(items, outcomes, strict=True)))

    assert imap_calls == {"move": 1}  # one UID MOVE for the whole group
    assert imap_box.messages("INBOX") == []
    assert imap_box.messages(processed(imap_box)) == raws
    assert source.fetch(10) == []


def test_without_move_capability_copy_delete_and_uid_expunge_touch_only_our_mail(
    imap_box: Dovecot,
    make_source: Factory,
    imap_calls: dict[str, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    original = IMAPClient.has_capability
    monkeypatch.setattr(
        IMAPClient,
        "has_capability",
        lambda self, cap: cap.upper() != "MOVE" and original(self, cap),
    )
    foreign = message(99)
    imap_box.append(foreign, flags=[b"\\Deleted"])  # someone else's, marked but not expunged
    raws = [message(i) for i in range(3)]
    imap_box.append_many(raws)
    source = make_source()
    items = source.fetch(10)
    assert [i.raw for i in items] == raws  # \Deleted mail is not offered
    imap_calls.clear()

    source.settle_batch([(item, "ticket") for item in items])

    assert imap_calls == {"copy": 1, "add_flags": 1, "uid_expunge": 1}
    assert imap_box.messages(processed(imap_box)) == raws
    assert imap_box.messages("INBOX") == [foreign]


def test_seen_mode_keeps_mail_in_the_inbox_flagged_seen_and_offers_it_once(
    imap_box: Dovecot, make_source: Factory
) -> None:
    raws = [message(i) for i in range(3)]
    imap_box.append_many(raws)
    source = make_source(processed_folder="")
    items = source.fetch(10)
    assert len(items) == 3

    source.settle_batch([(item, "ticket") for item in items])

    assert imap_box.messages("INBOX") == raws
    assert all(b"\\Seen" in flags for flags in imap_box.flags())
    assert source.fetch(10) == []
    assert imap_box.folders() == ["INBOX"]  # no processed folder made in this mode


def test_quarantined_and_ignored_mail_goes_to_the_quarantine_folder(
    imap_box: Dovecot, make_source: Factory, imap_calls: dict[str, int]
) -> None:
    raws = [message(i) for i in range(4)]
    imap_box.append_many(raws)
    source = make_source()
    items = source.fetch(10)
    imap_calls.clear()

    source.settle_batch(
        list(zip(items, ["ticket", "quarantined", "ignored", "entry"], strict=True))
    )

    assert imap_calls == {"move": 2}  # one per outcome group
    assert imap_box.messages(processed(imap_box)) == [raws[0], raws[3]]
    assert imap_box.messages(quarantine(imap_box)) == [raws[1], raws[2]]
    assert imap_box.messages("INBOX") == []


def test_a_uidvalidity_change_gives_new_keys_and_old_keys_settle_nothing(
    imap_box: Dovecot, make_source: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    raws = [message(i) for i in range(3)]
    imap_box.append_many(raws, folder="Complaints")
    source = make_source(folder="Complaints")
    before = source.fetch(10)  # taken in; then, before settling, the folder is re-created

    with imap_box.client() as client:  # deleted and made again: a new UIDVALIDITY
        client.delete_folder("Complaints")
    imap_box.append_many(raws, folder="Complaints")
    caplog.set_level(logging.INFO, logger="caseloop.imap")
    after = source.fetch(10)

    assert [i.raw for i in after] == raws
    assert not {i.key for i in before} & {i.key for i in after}
    assert parse_key(after[0].key)[1] == imap_box.uidvalidity("Complaints")
    assert any("event=imap.uidvalidity_changed" in r.message for r in caplog.records)
    source.settle_batch([(item, "ticket") for item in before])  # stale UIDs: must not move
    assert imap_box.messages("Complaints") == raws


def test_a_folder_the_server_refuses_to_take_mail_into_does_not_block_new_mail(
    imap_box: Dovecot,
    make_source: Factory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    imap_box.append_many([message(1), message(2)])
    source = make_source()
    stuck = source.fetch(10)

    def refuse(self: IMAPClient, *args: Any) -> None:
        raise IMAPClient.Error("move failed: [NOPERM] Permission denied")

    with monkeypatch.context() as patch:
        patch.setattr(IMAPClient, "move", refuse)
        source.settle_batch([(item, "ticket") for item in stuck])
    assert any("event=imap.settle_failed" in r.message for r in caplog.records)

    imap_box.append(message(3))
    fresh = source.fetch(10)
    assert [i.raw for i in fresh] == [message(3)]  # the refused two are not offered again
    source.settle_batch([(item, "ticket") for item in fresh])
    assert imap_box.messages(processed(imap_box)) == [message(3)]
    assert source.last_error is None  # a refusal is not an outage


def test_two_mailboxes_are_read_side_by_side_without_mixing_mail(
    imap_box: Dovecot, make_source: Factory, tmp_path: Path
) -> None:
    other = "other@example.com"
    (tmp_path / "other-password").write_text(imap_box.users[other])
    imap_box.append(message(1))
    imap_box.append(message(2), user=other)
    support = make_source()
    complaints = make_source(
        name="complaints",
        address=other,
        username=other,
        password=Secret(file=tmp_path / "other-password"),
    )

    mine, theirs = support.fetch(10), complaints.fetch(10)

    assert [(i.source, i.raw) for i in mine] == [("support", message(1))]
    assert [(i.source, i.raw) for i in theirs] == [("complaints", message(2))]


def test_fetch_works_again_after_dovecot_restarts_and_the_outage_is_logged_once(
    imap_box: Dovecot, make_source: Factory, caplog: pytest.LogCaptureFixture
) -> None:
    raws = [message(i) for i in range(3)]
    imap_box.append_many(raws)
    source = make_source(backoff_initial=0.2, backoff_max=0.4)
    attempts = 0
    connect = source._connect

    def counting_connect() -> IMAPClient:
        nonlocal attempts
        attempts += 1
        return connect()

    source._connect = counting_connect  # type: ignore[method-assign]
    caplog.set_level(logging.INFO, logger="caseloop.imap")
    items = source.fetch(10)
    assert len(items) == 3

    imap_box.stop()  # mid-batch: taken in and committed, not yet settled
    source.settle_batch([(item, "ticket") for item in items])  # fails quietly
    assert source.last_error is not None
    calls, start = 0, time.monotonic()
    while time.monotonic() - start < 0.6:
        assert source.fetch(10) == []
        calls += 1
        time.sleep(0.01)
    assert calls > 20 and attempts <= 4  # backoff: most calls do not even try

    imap_box.start()
    again: list[Any] = []
    deadline = time.monotonic() + 5
    while not again and time.monotonic() < deadline:
        again = source.fetch(10)
        time.sleep(0.05)
    assert [i.key for i in again] == [i.key for i in items]  # same UIDVALIDITY, same keys
    source.settle_batch([(item, "ticket") for item in again])
    assert imap_box.messages("INBOX") == []
    assert imap_box.messages(processed(imap_box)) == raws
    assert source.last_error is None

    logged = [r.message for r in caplog.records]
    assert sum("event=imap.unreachable" in m for m in logged) == 1
    assert sum("event=imap.reconnected" in m for m in logged) == 1


def test_idle_wakes_up_within_two_seconds_of_new_mail(
    imap_box: Dovecot, make_source: Factory
) -> None:
    source = make_source(idle=True)
    assert source.fetch(10) == []
    appended_at: list[float] = []

    def deliver() -> None:
        time.sleep(0.3)
        imap_box.append(message(1))
        appended_at.append(time.monotonic())

    sender = threading.Thread(target=deliver)
    sender.start()
    announced = source.wait_for_mail(10)
    woke_at = time.monotonic()
    sender.join()

    assert announced is True
    assert woke_at - appended_at[0] < 2.0
    assert [i.raw for i in source.fetch(10)] == [message(1)]


@pytest.mark.parametrize("cut", ["restart", "crash"])  # BYE first, or the socket just dies
def test_an_idle_cut_by_a_server_restart_returns_early_and_the_source_recovers(
    imap_box: Dovecot, make_source: Factory, cut: str
) -> None:
    source = make_source(idle=True, backoff_initial=0.1, backoff_max=0.2)
    assert source.fetch(10) == []
    restart = threading.Timer(0.3, getattr(imap_box, cut))
    restart.start()
    start = time.monotonic()

    assert source.wait_for_mail(10) is False  # BYE or EOF: the wait ends, it does not hang
    assert time.monotonic() - start < 3
    restart.join()
    imap_box.append(message(4))
    found: list[Any] = []
    deadline = time.monotonic() + 5
    while not found and time.monotonic() < deadline:
        source.wait_for_mail(1)  # sleeps out the backoff instead of spinning
        found = source.fetch(10)
    assert [i.raw for i in found] == [message(4)]


def test_idle_is_renewed_without_losing_mail(
    imap_box: Dovecot, make_source: Factory, imap_calls: dict[str, int]
) -> None:
    source = make_source(idle=True)
    source.idle_renew = 0.3  # instead of 25 minutes
    assert source.fetch(10) == []
    timer = threading.Timer(1.0, imap_box.append, args=(message(2),))
    timer.start()
    imap_calls.clear()
    try:
        assert source.wait_for_mail(10) is True
    finally:
        timer.cancel()
    assert imap_calls["idle"] >= 3


def test_wait_for_mail_returns_false_on_timeout_on_wake_and_when_polling(
    imap_box: Dovecot, make_source: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    idle = make_source(idle=True)
    assert idle.fetch(10) == []
    start = time.monotonic()
    assert idle.wait_for_mail(0.5) is False
    assert 0.4 < time.monotonic() - start < 1.5

    threading.Timer(0.2, idle.wake).start()
    start = time.monotonic()
    assert idle.wait_for_mail(10) is False
    assert time.monotonic() - start < 1.5

    original = IMAPClient.has_capability
    with monkeypatch.context() as patch:  # a server without IDLE: the source just sleeps
        patch.setattr(
            IMAPClient, "has_capability", lambda self, cap: cap != "IDLE" and original(self, cap)
        )
        no_idle = make_source(idle=True)
        assert no_idle.fetch(10) == []
        start = time.monotonic()
        assert no_idle.wait_for_mail(0.3) is False
        assert time.monotonic() - start >= 0.25

    polling = make_source(idle=False)
    assert polling.fetch(10) == []
    imap_box.append(message(3))
    start = time.monotonic()
    assert polling.wait_for_mail(0.3) is False  # a poll-only source just sleeps
    assert time.monotonic() - start >= 0.25
    assert len(polling.fetch(10)) == 1
    assert polling.wait_for_mail(10) is True  # it found mail: poll again at once


def test_check_reports_waiting_mail_or_the_reason_it_failed(
    imap_box: Dovecot, make_source: Factory, tmp_path: Path
) -> None:
    imap_box.append_many([message(1), message(2)])
    assert make_source().check() == "ok, 2 message(s) waiting in INBOX"
    assert make_source().backlog() == 2

    wrong = tmp_path / "wrong-password"
    wrong.write_text("nope")
    refused = make_source(password=Secret(file=wrong)).check()
    assert refused.startswith("FAILED: login as support@example.com refused")
    assert (
        make_source(password=Secret(command="false"))
        .check()
        .startswith("FAILED: cannot read the password: CalledProcessError")
    )
    from conftest import free_port

    unreachable = make_source(port=free_port()).check()
    assert unreachable.startswith("FAILED: cannot reach 127.0.0.1:")
    assert make_source(folder="NoSuchFolder").check().startswith("FAILED:")


def test_the_app_opens_tickets_and_acks_over_smtp_from_an_imap_mailbox(
    make_app: Callable[..., App],
    imap_box: Dovecot,
    smtp_sink: tuple[Any, int],
    tmp_path: Path,
) -> None:
    sink, smtp_port = smtp_sink
    app = make_app(
        imap_mailbox_toml(imap_box, tmp_path) + "[smtp]\n"
        'host = "127.0.0.1"\n'
        f"port = {smtp_port}\n"
        'security = "none"\n'
        "[intake]\n"
        'ack_max_age = "365 days"\n'
    )
    if not any(isinstance(s, ImapSource) for s in app.sources):  # until build_sources knows imap
        app.sources = [ImapSource(app.config.mailboxes[0])]
    complaints = ["en-plain.eml", "gb18030.eml", "rfc2231-attachment-zh.eml"]
    imap_box.append_many([corpus(n) for n in [*complaints, "auto-reply-zh.eml"]])

    try:
        summary = app.run_once()
    finally:
        for source in app.sources:
            if isinstance(source, ImapSource):
                source.close()

    assert len(summary.opened) == 3
    assert len(sink.messages) == 3
    with app.sessions() as session:
        assert len(session.scalars(select(Ticket)).all()) == 3
        assert {r.status for r in session.scalars(select(OutboxMessage))} == {"sent"}
    assert imap_box.messages("INBOX") == []
    assert len(imap_box.messages(processed(imap_box))) == 3
    assert imap_box.messages(quarantine(imap_box)) == [corpus("auto-reply-zh.eml")]


# -- mail that arrives while a batch is taken in ------------------------------------------------
# Dovecot tells a session of each new message once: in the response to the next command, at the
# start of an IDLE, or during one. Each test below makes a message arrive at one of the moments
# between the daemon's SEARCH and its IDLE, where that announcement used to be lost, so that a
# wait meant to last until the next poll (30 or 60 s) must end within a few seconds.

PROMPTLY = 5.0  # seconds: far less than the poll interval, far more than Dovecot's ~0.5 s


def mail_arrives_after_select(box: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a SELECT finds the folder empty (the batch was taken in), a message arrives before
    the SEARCH that follows: Dovecot leaves it out of the result and tells `* N EXISTS` with
    the SEARCH's response instead."""
    select_folder = IMAPClient.select_folder

    def select_then_deliver(client: IMAPClient, *args: Any, **kwargs: Any) -> Any:
        response = select_folder(client, *args, **kwargs)
        if response[b"EXISTS"] == 0:
            monkeypatch.setattr(IMAPClient, "select_folder", select_folder)  # once
            box.append(message(1))
        return response

    monkeypatch.setattr(IMAPClient, "select_folder", select_then_deliver)


def mail_arrives_after_fetch(box: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a fetch finds nothing (the batch was taken in), a message arrives before IDLE is
    entered: Dovecot announces it right behind IDLE's "+ idling", in the same TCP segment."""
    fetch = ImapSource.fetch

    def fetch_then_deliver(source: ImapSource, limit: int) -> list[Any]:
        items = fetch(source, limit)
        if not items:
            monkeypatch.setattr(ImapSource, "fetch", fetch)  # once
            box.append(message(1))
        return items

    monkeypatch.setattr(ImapSource, "fetch", fetch_then_deliver)


@pytest.mark.parametrize("arrives", [mail_arrives_after_select, mail_arrives_after_fetch])
def test_mail_that_arrived_between_the_search_and_the_idle_ends_the_wait(
    imap_box: Dovecot,
    make_source: Factory,
    monkeypatch: pytest.MonkeyPatch,
    arrives: Callable[[Dovecot, pytest.MonkeyPatch], None],
) -> None:
    source = make_source(idle=True)
    arrives(imap_box, monkeypatch)
    assert source.fetch(10) == []  # the SEARCH did not see it
    source.backlog()  # the STATUS intake sends between the fetch and the wait

    start = time.monotonic()
    announced = source.wait_for_mail(30)

    assert announced is True
    assert time.monotonic() - start < PROMPTLY
    assert [i.raw for i in source.fetch(10)] == [message(1)]


def test_a_quiet_mailbox_still_waits_for_the_timeout(
    imap_box: Dovecot, make_source: Factory
) -> None:
    source = make_source(idle=True)
    assert source.fetch(10) == []
    source.backlog()  # an answer without news must not count as news

    start = time.monotonic()
    assert source.wait_for_mail(1.0) is False
    assert time.monotonic() - start >= 0.9


@pytest.mark.parametrize("arrives", [mail_arrives_after_select, mail_arrives_after_fetch])
def test_the_daemon_takes_in_mail_that_arrived_while_it_took_in_a_batch(
    make_app: Callable[..., App],
    imap_box: Dovecot,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    arrives: Callable[[Dovecot, pytest.MonkeyPatch], None],
) -> None:
    app = make_app(imap_mailbox_toml(imap_box, tmp_path) + '[intake]\npoll_interval = "60s"\n')
    (source,) = app.sources
    assert isinstance(source, ImapSource) and source.config.idle
    imap_box.append(message(0))  # the batch being taken in
    arrives(imap_box, monkeypatch)
    loop = threading.Thread(target=app._intake_loop, args=(source,), name="intake-support")
    loop.start()

    def tickets() -> int:
        with app.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(Ticket)) or 0)

    try:
        deadline = time.monotonic() + 2 * PROMPTLY
        while tickets() < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tickets() == 2  # the poll interval is 60 s: both came without waiting for it
    finally:
        app.stop()
        loop.join(10)
    assert not loop.is_alive()
    assert imap_box.messages("INBOX") == []


def test_intake_reads_the_next_batch_ahead_over_imap(
    make_app: Any, imap_box: Dovecot, tmp_path: Path
) -> None:
    """Batches of 4 of 10: the second and third are prepared in the worker from bodies the
    peek read, while the batch before them is decided; every mail one case, all moved on."""
    app = make_app(
        imap_mailbox_toml(imap_box, tmp_path) + "[intake]\nbatch_size = 4\nprepare_aside = true\n"
    )
    app.intake.preparer.warm()
    imap_box.append_many([message(i) for i in range(10)])

    app.run_once()

    with app.reads() as session:
        assert session.scalar(select(func.count()).select_from(Ticket)) == 10
    assert app.intake.preparer.taken_aside == 6
    assert imap_box.messages("INBOX") == []
