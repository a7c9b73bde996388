"""Promises of handlers/loopguard.py: robots are never answered, people always are."""

from __future__ import annotations

import base64
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from daemon.config import Config, MailboxConfig
from daemon.items import Incoming
from handlers.context import Prepared
from handlers.loopguard import LoopGuard, automatic_mail
from handlers.parse import ParsedMessage, parse_message

DATA = Path(__file__).parent / "data"
THREADS = DATA / "threads"
OWN = frozenset({"support@example.com", "help@example.com"})


def automatic_reason(msg: ParsedMessage) -> str | None:
    """Why the loop guard takes this mail for a robot's, or None for a person's mail."""
    found = automatic_mail(msg, OWN)
    return found.reason if found else None


def corpus(path: Path) -> ParsedMessage:
    return parse_message(path.read_bytes())


def message(*headers: str, subject: str = "My order", body: str = "Hello\n") -> ParsedMessage:
    """A person's plain mail from Gmail; the given headers added or put in place of its own."""
    encoded = base64.b64encode(subject.encode("utf-8")).decode()
    lines = {
        "return-path": "Return-Path: <zhang.wei@gmail.com>",
        "from": "From: Zhang Wei <zhang.wei@gmail.com>",
        "to": "To: support@example.com",
        "subject": f"Subject: =?UTF-8?B?{encoded}?=",
        "message-id": "Message-ID: <CAF7xK3q9vN2pZ4b@mail.gmail.com>",
        "content-type": "Content-Type: text/plain; charset=utf-8",
    }
    for header in headers:
        lines[header.partition(":")[0].lower()] = header
    return parse_message(("\r\n".join(lines.values()) + "\r\n\r\n" + body).encode("utf-8"))


# --- the corpus --------------------------------------------------------------------------------

ROBOTS = [
    # (file, the start of the reason)
    ("postfix-bounce.eml", "bounce (permanent): 550 Mailbox not found"),
    ("postfix-delayed.eml", "bounce (delayed)"),
    ("exim-bounce.eml", "bounce (permanent)"),
    ("exim-bounce-plain.eml", "bounce (permanent)"),
    ("exchange-ndr.eml", "bounce (permanent)"),
    ("gmail-dsn.eml", "bounce (permanent)"),
    ("qq-bounce-zh.eml", "bounce (permanent)"),
    ("coremail-bounce-zh.eml", "bounce (permanent)"),
    ("sieve-vacation-en.eml", "null sender"),
    ("outlook-ooo-en.eml", "Auto-Submitted: auto-generated"),
    ("qq-autoreply-headerless-zh.eml", "auto-reply subject"),
    ("outlook-autoreply-headerless-zh.eml", "auto-reply subject"),
    ("list-mail-en.eml", "bounce return path"),
    ("read-receipt-zh.eml", "read receipt"),
]


@pytest.mark.parametrize(("name", "reason"), ROBOTS)
def test_robot_mail_in_the_corpus_is_automatic(name: str, reason: str) -> None:
    found = automatic_reason(corpus(THREADS / name))
    assert found is not None and found.startswith(reason)


PEOPLE = sorted(
    [p for p in THREADS.glob("*.eml") if p.name not in {name for name, _ in ROBOTS}]
    + [
        p
        for p in DATA.glob("*.eml")
        if p.name not in {"auto-reply-zh.eml", "bounce-null-sender.eml", "no-from.eml"}
        and p.name != "not-an-email.eml"
    ]
)


@pytest.mark.parametrize("path", PEOPLE, ids=[p.name for p in PEOPLE])
def test_mail_a_person_wrote_is_not_automatic(path: Path) -> None:
    assert automatic_reason(corpus(path)) is None


def test_bounce_comes_back_with_what_failed() -> None:
    found = automatic_mail(corpus(THREADS / "postfix-bounce.eml"), OWN)
    assert found is not None and found.bounce is not None
    assert found.bounce.recipients == ("li.na@qq.com",)
    assert found.bounce.original_message_id == "<177620000000.1001.2000@example.com>"


def test_automatic_mail_that_is_no_bounce_carries_none() -> None:
    found = automatic_mail(corpus(THREADS / "sieve-vacation-en.eml"), OWN)
    assert found is not None and found.bounce is None


# --- one header each --------------------------------------------------------------------------

HEADER_SIGNALS = [
    # (header, words of the reason)
    ("Auto-Submitted: auto-replied", "Auto-Submitted: auto-replied"),
    ("Auto-Submitted: auto-generated", "Auto-Submitted: auto-generated"),
    ("Auto-Submitted: auto-replied (vacation)", "Auto-Submitted"),
    ("Auto-Submitted: auto-notified; owner-email=x@example.org", "Auto-Submitted"),
    ("Precedence: bulk", "Precedence: bulk"),
    ("Precedence: junk", "Precedence: junk"),
    ("Precedence: list", "Precedence: list"),
    ("Precedence: auto_reply", "Precedence: auto_reply"),
    ("List-Id: Shoppers <shoppers.lists.example.net>", "mailing list (list-id)"),
    ("List-Unsubscribe: <mailto:leave@lists.example.net>", "mailing list (list-unsubscribe)"),
    ("List-Post: <mailto:shoppers@lists.example.net>", "mailing list (list-post)"),
    ("X-Auto-Response-Suppress: All", "automated sender"),
    ("X-Auto-Response-Suppress: OOF, AutoReply", "automated sender"),
    ("X-Autoreply: yes", "autoresponder (x-autoreply)"),
    ("X-Autorespond: Away", "autoresponder (x-autorespond)"),
    ("X-Autoreply-From: zhang.wei@gmail.com", "autoresponder (x-autoreply-from)"),
    ("X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent", "Exchange generated"),
    ("X-MS-Exchange-Message-Is-Ndr: ", "Exchange generated"),
    ("X-Loop: helpdesk@shop.example", "loop header (x-loop)"),
    ("X-OTRS-Loop: yes", "loop header (x-otrs-loop)"),
    ("X-Mailer: Vacation 1.2", "X-Mailer: Vacation 1.2"),
]


@pytest.mark.parametrize(("header", "reason"), HEADER_SIGNALS)
def test_each_rfc3834_and_autoresponder_header_marks_the_mail_automatic(
    header: str, reason: str
) -> None:
    found = automatic_reason(message(header))
    assert found is not None and reason in found


def test_auto_submitted_no_is_a_person() -> None:
    assert automatic_reason(message("Auto-Submitted: no")) is None
    assert automatic_reason(message("Auto-Submitted: No (written by hand)")) is None


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        (("Return-Path: <>",), "null sender"),
        (("From: MAILER-DAEMON@mx.example.net",), "robot sender mailer-daemon"),
        (("From: postmaster@example.org",), "robot sender postmaster"),
        (("From: no-reply@shop.example",), "robot sender no-reply"),
        (("Sender: Mailer-Daemon@mx.example.net",), "robot sender mailer-daemon"),
        (("Return-Path: <bounces+8821-ab12-support=example.com@em.shop.example>",), "bounce"),
    ],
)
def test_null_and_robot_senders_are_automatic(headers: tuple[str, ...], reason: str) -> None:
    msg = message(*headers)
    found = automatic_reason(msg)
    assert found is not None and found.startswith(reason)


@pytest.mark.parametrize(
    "header",
    [
        "From: Example Support <support@example.com>",
        "From: SUPPORT@Example.com",
        "From: help@example.com",  # an alias
        "From: support+TS-20261124-0007.k3x9q2@example.com",  # our reply token address
        "Sender: support@example.com",
        "Return-Path: <support@example.com>",
    ],
)
def test_mail_from_our_own_addresses_is_never_consumer_mail(header: str) -> None:
    assert automatic_reason(message(header)) == "mail from our own address"


def test_return_path_of_a_person_named_like_a_list_is_not_a_bulk_sender() -> None:
    assert automatic_reason(message("Return-Path: <bouncer.li@gmail.com>")) is None


# --- subjects of responders that send no header ----------------------------------------------

AUTO_SUBJECTS = [
    "Automatic reply: [TS-20261124-0007] Refund for order A-20261101-778",
    "Auto: Re: [TS-20261124-0007] Refund",
    "Autoreply: your complaint",
    "AutoReply",
    "Auto Response: [TS-20261124-0007]",
    "Out of Office: Re: [TS-20261124-0007] Refund",
    "Out of Office AutoReply: Refund",
    "Out of office until Monday",
    "Away from the office",
    "On vacation",
    "On holiday - back 7 December",
    "I am out of the office",
    "I'm on vacation until 1 December",
    "自动回复: 关于您的投诉 [TS-20261124-0007]",
    "自动回复：回复：[TS-20261124-0007] 退款",
    "自动答复: 回复: [TS-20261124-0007] 快递显示签收但未收到",
    "【自动回复】您好，您的邮件已收到",
    "[自动回复] 您好",
    "自動回覆: 退款",
    "休假中",
    "休假通知：11月20日返回",
    "不在办公室",
    "外出：12月1日返回",
    "[外出] 12月1日返回",
    "出差中",
]


@pytest.mark.parametrize("subject", AUTO_SUBJECTS)
def test_headerless_auto_reply_is_recognised_by_subject(subject: str) -> None:
    assert automatic_reason(message(subject=subject)) == "auto-reply subject"


COMPLAINT_SUBJECTS = [
    "自动续费扣了两次，要求退款",
    "自动扣款没有退回",
    "自动回复功能坏了，一直没人理我",
    "外出回来发现快递被偷了",
    "休假期间快递丢失",
    "不在办公室的时候快递员没打电话",
    "出差回来发现洗衣机漏水",
    "Automatic transmission fluid order missing",
    "Auto parts order A-1 never arrived",
    "Auto-renewal charged me twice",
    "Out of stock but you charged me",
    "Away from home when the courier came",
    "On vacation your product broke",
    "Re: [TS-20261124-0007] 我的自动回复设置不影响这个投诉",
    "Vacation rental refund",
]


@pytest.mark.parametrize("subject", COMPLAINT_SUBJECTS)
def test_complaint_mentioning_automatic_is_not_an_autoreply(subject: str) -> None:
    assert automatic_reason(message(subject=subject)) is None


# --- the pipeline step ------------------------------------------------------------------------


class _NoBlobs:
    def put(self, data: bytes) -> str:
        raise AssertionError("the loop guard stores nothing")


def _config(tmp_path: Path) -> Config:
    box = MailboxConfig(
        name="support", type="maildir", address="support@example.com", aliases=("help@example.com",)
    )
    return Config(
        source="test",
        base_dir=tmp_path,
        data_dir=tmp_path,
        timezone=ZoneInfo("Asia/Shanghai"),
        database_url="sqlite://",
        mailboxes=(box,),
    )


@pytest.mark.parametrize(
    ("name", "automatic"),
    [("postfix-bounce.eml", True), ("qq-mail-reply-zh.eml", False)],
)
def test_loopguard_step_marks_prepared_mail(tmp_path: Path, name: str, automatic: bool) -> None:
    raw = (THREADS / name).read_bytes()
    prep = Prepared(item=Incoming("test", name, raw, name), message=parse_message(raw))
    LoopGuard().process(prep, _config(tmp_path), _NoBlobs())
    assert bool(prep.automatic) is automatic
