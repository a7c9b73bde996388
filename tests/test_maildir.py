"""The Maildir source: oldest first, bounded batches, settled only after commit, nothing lost."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from daemon.maildirs import deliver_to_maildir, ensure_maildir
from daemon.sources import maildir
from daemon.sources.maildir import MaildirSource


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture
def box(tmp_path: Path) -> MaildirSource:
    return MaildirSource("support", tmp_path / "Maildir", tmp_path / "quarantine")


def deliver(box: MaildirSource, *stamps: int) -> None:
    """Mail named as a Maildir writer names it: the delivery time first."""
    for stamp in stamps:
        deliver_to_maildir(box.path, f"mail {stamp}\r\n".encode(), f"{stamp}.M{stamp}P1.host")


def test_the_source_makes_its_folders_and_counts_the_backlog(box: MaildirSource) -> None:
    assert not box.path.exists() and box.check().startswith("FAILED: no Maildir at")
    assert box.backlog() == 0 and box.fetch(10) == []  # its first fetch makes them
    assert all((box.path / sub).is_dir() for sub in ("new", "cur", "tmp"))
    deliver(box, 1700000001, 1700000002)
    assert box.backlog() == 2
    assert box.check() == f"ok, 2 message(s) waiting in {box.path / 'new'}"


def test_a_maildir_not_ours_to_create_is_an_error_each_poll_and_never_created(
    tmp_path: Path,
) -> None:
    typo = MaildirSource("support", tmp_path / "inbx", tmp_path / "q", create=False)
    assert typo.fetch(10) == [] and not typo.path.exists()
    assert typo.last_error == f"no Maildir at {typo.path} (no new/ folder)"
    assert typo.check().startswith("FAILED: no Maildir at") and not typo.path.exists()


def test_fetch_returns_the_oldest_mail_first_up_to_the_limit(box: MaildirSource) -> None:
    deliver(box, 1700000003, 1700000001, 1700000002)
    items = box.fetch(2)
    assert [i.key for i in items] == [
        "1700000001.M1700000001P1.host",
        "1700000002.M1700000002P1.host",
    ]
    assert [i.raw for i in items] == [b"mail 1700000001\r\n", b"mail 1700000002\r\n"]
    assert all(i.source == "support" and i.kind == "mail" for i in items)
    assert box.backlog() == 3  # fetching takes nothing away


def test_the_key_is_the_unique_name_without_the_info_part(box: MaildirSource) -> None:
    ensure_maildir(box.path)
    (box.path / "new" / "1700000001.M1P1.host:2,").write_bytes(b"x")
    [item] = box.fetch(10)
    assert (item.key, item.label) == ("1700000001.M1P1.host", "1700000001.M1P1.host:2,")


def test_a_batch_is_bounded_by_bytes_too(
    box: MaildirSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(maildir, "BATCH_BYTES", 40)
    deliver(box, 1700000001, 1700000002, 1700000003, 1700000004)  # 17 bytes each
    assert len(box.fetch(10)) == 3  # the mail that reaches the bound is the batch's last


def test_settling_moves_taken_in_mail_to_cur_and_set_aside_mail_to_quarantine(
    box: MaildirSource,
) -> None:
    deliver(box, 1700000001, 1700000002, 1700000003, 1700000004, 1700000005)
    items = box.fetch(10)
    outcomes = ["ticket", "entry", "duplicate", "quarantined", "ignored"]

    box.settle_batch(list(zip(items, outcomes, strict=True)))

    assert names(box.path / "new") == []
    assert names(box.path / "cur") == [f"{i.key}:2,S" for i in items[:3]]  # seen
    assert names(box.quarantine_path / "new") == [i.label for i in items[3:]]
    assert (box.path / "cur" / f"{items[0].key}:2,S").read_bytes() == items[0].raw
    assert box.fetch(10) == [] and box.backlog() == 0


def test_mail_not_settled_comes_back_after_a_crash(box: MaildirSource, tmp_path: Path) -> None:
    deliver(box, 1700000001, 1700000002)
    first = box.fetch(10)
    # The process dies after (or before) its transaction, before settling: a new one starts.
    again = MaildirSource("support", tmp_path / "Maildir", tmp_path / "quarantine")
    assert again.fetch(10) == first
    again.settle_batch([(first[0], "ticket")])
    assert again.fetch(10) == first[1:]


def test_settling_mail_already_gone_only_logs(
    box: MaildirSource, caplog: pytest.LogCaptureFixture
) -> None:
    deliver(box, 1700000001)
    [item] = box.fetch(10)
    box.settle(item, "ticket")
    with caplog.at_level(logging.WARNING, logger="caseloop.maildir"):
        box.settle(item, "ticket")  # another reader, or a settle redone
    assert "event=settle.missing" in caplog.text
    assert names(box.path / "cur") == [f"{item.key}:2,S"]


def test_peek_reads_on_after_a_key_without_settling(box: MaildirSource) -> None:
    deliver(box, 1700000001, 1700000002, 1700000003)
    first = box.peek(1, None)
    rest = box.peek(10, first[0].key)
    assert [i.key for i in first + rest] == [i.key for i in box.fetch(10)]
    assert box.backlog() == 3
