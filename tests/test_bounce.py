"""Promises of handlers/bounce.py: every failure report names what failed; nothing else does."""

from __future__ import annotations

from pathlib import Path

import pytest

from handlers.bounce import Bounce, parse_bounce
from handlers.parse import ParsedMessage, parse_message

THREADS = Path(__file__).parent / "data" / "threads"
ACK = "<177620000000.1001.2000@example.com>"


def corpus(name: str) -> ParsedMessage:
    return parse_message((THREADS / name).read_bytes())


def message(*headers: str, body: str = "Hello\n") -> ParsedMessage:
    return parse_message(("\r\n".join(headers) + "\r\n\r\n" + body).encode("utf-8"))


# --- the corpus: one report per kind of server -----------------------------------------------

REPORTS = [
    # (file, permanent, recipients, our original's Message-ID, words of the reason)
    ("postfix-bounce.eml", True, ("li.na@qq.com",), ACK, "550 Mailbox not found"),
    (
        "postfix-delayed.eml",
        False,
        ("chen.jing@corp-mail.cn",),
        "<177620300000.1002.2001@example.com>",
        "Connection timed out",
    ),
    ("exim-bounce.eml", True, ("zhou.min@example.org",), ACK, "5.0.0"),
    (
        "exim-bounce-plain.eml",
        True,
        ("he.jun@example.net",),
        "<177620600000.1003.2002@example.com>",
        "550 5.1.1 <he.jun@example.net>: Recipient address rejected",
    ),
    ("exchange-ndr.eml", True, ("j.smith@contoso.com",), ACK, "RESOLVER.ADR.RecipientNotFound"),
    ("gmail-dsn.eml", True, ("no.such.user.2026@gmail.com",), ACK, "550-5.1.1"),
    ("qq-bounce-zh.eml", True, ("li.na@qq.com",), ACK, "该邮箱空间不足"),
    (
        "coremail-bounce-zh.eml",
        True,
        ("wu.tao@corp.example.cn",),
        "<177620900000.1004.2003@example.com>",
        "收件人地址不存在或已被停用",
    ),
]


@pytest.mark.parametrize(("name", "permanent", "recipients", "original", "reason"), REPORTS)
def test_each_servers_report_names_the_failed_recipient_and_our_original(
    name: str, permanent: bool, recipients: tuple[str, ...], original: str, reason: str
) -> None:
    bounce = parse_bounce(corpus(name))
    assert bounce is not None
    assert bounce.permanent is permanent
    assert bounce.recipients == recipients
    assert bounce.original_message_id == original
    assert reason in bounce.reason
    assert "\n" not in bounce.reason and len(bounce.reason) <= 200


NOT_REPORTS = [
    "gmail-reply-en.eml",
    "qq-mail-reply-zh.eml",
    "complaint-undeliverable-parcel-en.eml",  # the subject says "Undeliverable", a person wrote it
    "complaint-forwarded-bounce-en.eml",  # a person forwarding a bounce to us
    "complaint-mentions-auto-zh.eml",
    "sieve-vacation-en.eml",  # automatic, but not a failure report
    "qq-autoreply-headerless-zh.eml",
    "read-receipt-zh.eml",  # multipart/report, but a read receipt
    "list-mail-en.eml",
]


@pytest.mark.parametrize("name", NOT_REPORTS)
def test_mail_that_reports_no_failure_is_not_a_bounce(name: str) -> None:
    assert parse_bounce(corpus(name)) is None


def test_bounce_is_a_frozen_value() -> None:
    bounce = parse_bounce(corpus("postfix-bounce.eml"))
    assert isinstance(bounce, Bounce)
    with pytest.raises(AttributeError):
        bounce.permanent = False  # type: ignore[misc]


# --- where our original's Message-ID comes from -----------------------------------------------

ROBOT = ("Return-Path: <>", "From: MAILER-DAEMON@mx.example.net (Mail Delivery System)")


def test_original_found_by_in_reply_to_when_nothing_is_enclosed() -> None:
    bounce = parse_bounce(
        message(
            *ROBOT,
            "To: support@example.com",
            "Subject: Undelivered Mail Returned to Sender",
            f"In-Reply-To: {ACK}",
            body="<gone@example.net>: host mx.example.net said: 550 5.1.1 User unknown\n",
        )
    )
    assert bounce == Bounce(
        permanent=True,
        recipients=("gone@example.net",),
        original_message_id=ACK,
        reason="<gone@example.net>: host mx.example.net said: 550 5.1.1 User unknown",
    )


def test_original_found_by_references_when_there_is_no_in_reply_to() -> None:
    bounce = parse_bounce(
        message(
            *ROBOT,
            "Subject: Mail delivery failed: returning message to sender",
            f"References: <older@example.com> {ACK}",
            body="Recipient address: gone@example.net\n550 No such user\n",
        )
    )
    assert bounce is not None and bounce.original_message_id == ACK


def test_original_found_by_a_message_id_line_in_the_text() -> None:
    bounce = parse_bounce(
        message(
            "From: Postmaster@corp.example.cn",
            "Subject: =?UTF-8?B?6YKu5Lu26KKr6YCA5Zue?=",  # 邮件被退回
            "Content-Type: text/plain; charset=utf-8",
            body=f"收件人：gone@corp.example.cn\n退信原因：用户不存在\n原邮件Message-ID：{ACK}\n",
        )
    )
    assert bounce is not None
    assert bounce.recipients == ("gone@corp.example.cn",)
    assert bounce.original_message_id == ACK
    assert bounce.reason == "用户不存在"


# --- recipients, permanence and reason from the non-standard forms ----------------------------


def test_old_exchange_ndr_text_is_read_by_flufl_bounce() -> None:
    bounce = parse_bounce(
        message(
            *ROBOT,
            "Subject: Undeliverable: [TS-20261124-0007] Refund",
            body="Your message\n\n  To:      j.doe@corp.example\n  Subject: Refund\n\n"
            "did not reach the following recipient(s):\n\n"
            "j.doe@corp.example on 24/11/2026 10:03\n"
            "    The e-mail account does not exist at the organization.\n"
            "    <mail.corp.example #5.1.1>\n",
        )
    )
    assert bounce is not None
    assert bounce.recipients == ("j.doe@corp.example",)
    assert bounce.permanent is True


def test_delay_warning_is_not_permanent() -> None:
    bounce = parse_bounce(
        message(
            "From: Mail Delivery Subsystem <mailer-daemon@googlemail.com>",
            "Subject: Delivery Status Notification (Delay)",
            body="Your message to slow@example.net has not been delivered yet. "
            "Gmail will retry for 46 more hours.\n",
        )
    )
    assert bounce is not None
    assert bounce.permanent is False
    assert bounce.recipients == ("slow@example.net",)


def test_robot_bounce_with_nothing_readable_is_still_a_bounce() -> None:
    bounce = parse_bounce(message(*ROBOT, "Subject: Returned mail: see transcript for details"))
    assert bounce == Bounce(
        permanent=True,
        recipients=(),
        original_message_id=None,
        reason="Returned mail: see transcript for details",
    )


def test_our_own_address_in_the_report_is_never_the_failed_recipient() -> None:
    bounce = parse_bounce(
        message(
            *ROBOT,
            "To: support@example.com",
            "Subject: 系统退信",
            body="您的邮箱账号（support@example.com）发送的邮件被退回。\n"
            "收件人：support@example.com\n收件人：gone@example.cn\n",
        )
    )
    assert bounce is not None and bounce.recipients == ("gone@example.cn",)


SUCCESS_DSN = (
    "Return-Path: <>",
    "From: MAILER-DAEMON@mx.example.net",
    'Content-Type: multipart/report; report-type=delivery-status; boundary="b"',
    "Subject: Successful Mail Delivery Report",
)


def test_report_of_successful_delivery_is_not_a_bounce() -> None:
    body = (
        "--b\r\nContent-Type: text/plain\r\n\r\nDelivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        "Final-Recipient: rfc822; ok@example.net\r\nAction: delivered\r\nStatus: 2.0.0\r\n"
        "--b--\r\n"
    )
    assert parse_bounce(message(*SUCCESS_DSN, body=body)) is None


@pytest.mark.parametrize(
    "subject",
    ["退信了怎么办？", "Undeliverable package, please help", "Returned mail order A-1"],
)
def test_person_whose_subject_sounds_like_a_bounce_is_not_one(subject: str) -> None:
    msg = message(
        "From: Zhang Wei <zhang.wei@example.cn>",
        f"Subject: {subject}",
        "Content-Type: text/plain; charset=utf-8",
        body="收件人：li.na@example.cn 说没收到，550 元的订单。\n",
    )
    assert parse_bounce(msg) is None


def test_chinese_text_right_after_an_address_is_not_part_of_it() -> None:
    bounce = parse_bounce(
        message(
            *ROBOT,
            "Subject: =?UTF-8?B?57O757uf6YCA5L+h?=",  # 系统退信
            "Content-Type: text/plain; charset=utf-8",
            body="您的邮件无法投递到 gone@example.cn请检查收件人地址。\n",
        )
    )
    assert bounce is not None and bounce.recipients == ("gone@example.cn",)
