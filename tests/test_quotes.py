"""Promises of handlers/quotes.py: the timeline shows what the person wrote, not the history."""

from __future__ import annotations

from pathlib import Path

import pytest
from replies import REPLIES

from handlers.parse import parse_message
from handlers.quotes import strip_quotes

THREADS = Path(__file__).parent / "data" / "threads"


def new_text(name: str) -> str:
    return strip_quotes(parse_message((THREADS / name).read_bytes()).text)


# --- real-shaped replies, parsed from .eml as the pipeline sees them -------------------------


@pytest.mark.parametrize(("name", "expected"), REPLIES)
def test_reply_from_each_client_keeps_only_the_new_text(name: str, expected: str) -> None:
    assert new_text(name) == expected


def test_qq_mail_reply_keeps_only_the_new_text() -> None:
    text = new_text("qq-mail-reply-zh.eml")
    assert "原始邮件" not in text and "发件人" not in text and "退款申请已受理" not in text


def test_inline_answers_between_quotes_are_kept_and_the_quotes_dropped() -> None:
    text = new_text("thunderbird-inline-reply-en.eml")
    assert "SN-4471-0932-XK" in text and "12 October 2026" in text
    assert "serial number" not in text and "Tom Becker" not in text  # quote and signature


# --- inline strings: one marker each ----------------------------------------------------------

QUOTED = "Dear customer,\nYour refund is approved.\nExample Support"

CASES = [
    # (what it shows, the reply, the new text)
    (
        "gmail attribution on one line, quote laid out from HTML (no '>')",
        f"Thanks, received.\n\nOn Tue, Nov 24, 2026 at 10:02 AM Support <support@example.com> "
        f"wrote:\n\n    {QUOTED}",
        "Thanks, received.",
    ),
    (
        "gmail attribution wrapped over two lines",
        "Thanks.\n\nOn Tue, Nov 24, 2026 at 10:02 AM Example Customer Support Team <\n"
        "support@example.com> wrote:\n\n> Dear customer,\n> approved.\n",
        "Thanks.",
    ),
    (
        "thunderbird attribution without an address",
        "Fine by me.\n\nOn 24/11/2026 10:02, Example Support wrote:\n> Is Monday OK?\n",
        "Fine by me.",
    ),
    (
        "outlook Original Message separator",
        f"Please call me.\n\n-----Original Message-----\nFrom: Support\nSent: Tuesday\n\n{QUOTED}",
        "Please call me.",
    ),
    (
        "outlook header block without the underscores",
        "Received, thanks.\nFrom: Example Support <support@example.com>\n"
        "Sent: Tuesday, November 24, 2026 10:02 AM\nTo: Anna <anna@example.org>\n"
        f"Subject: RE: refund\n\n{QUOTED}",
        "Received, thanks.",
    ),
    (
        "outlook header block as Gmail renders it (bold labels)",
        "OK.\n\n*From:* Example Support <support@example.com>\n*Sent:* Tuesday, November 24\n"
        f"*To:* Anna\n*Subject:* refund\n\n{QUOTED}",
        "OK.",
    ),
    (
        "outlook zh header block with full-width colons",
        "已收到。\n\n发件人： Example Support <support@example.com>\n"
        "发送时间： 2026年11月24日 10:02\n"
        f"收件人： 王芳\n主题： 回复: 退款\n\n{QUOTED}",
        "已收到。",
    ),
    (
        "outlook zh-TW header block",
        "謝謝。\n\n寄件者: Example Support <support@example.com>\n"
        "寄件日期: 2026年11月24日 上午 10:02\n"
        f"收件者: 陳小姐\n主旨: 退款\n\n{QUOTED}",
        "謝謝。",
    ),
    (
        "QQ Mail separator with real spaces",
        "好的\n\n------------------ 原始邮件 ------------------\n"
        f'发件人: "客服"<support@example.com>;\n\n{QUOTED}',
        "好的",
    ),
    (
        "QQ Mail separator with no-break spaces (HTML laid out as text)",
        f"好的\n\n------------------\xa0原始邮件\xa0------------------\n{QUOTED}",
        "好的",
    ),
    (
        "QQ Mail separator spelled with &nbsp; in the plain part",
        f"收到\n------------------&nbsp;Original&nbsp;------------------\n{QUOTED}",
        "收到",
    ),
    (
        "QQ Mail header block alone, no separator",
        '还没到货。\n\n发件人: "客服"<support@example.com>;\n'
        "发送时间: 2026年11月24日(星期二) 上午10:02\n"
        f'收件人: "李娜"<li.na@qq.com>;\n主题: 回复\n\n{QUOTED}',
        "还没到货。",
    ),
    (
        "Sina separator",
        "请尽快。\n\n----- 原始邮件 -----\n发件人：客服 <support@example.com>\n"
        f"收件人：我\n主题：退款\n{QUOTED}",
        "请尽快。",
    ),
    (
        "163 attribution, quote laid out from HTML",
        f'同意换货。\n\n在 2026-11-24 10:02:11，"客服" <support@example.com> 写道：\n\n{QUOTED}',
        "同意换货。",
    ),
    (
        "zh attribution with an ASCII colon",
        f"好\n\n在 2026年11月24日 10:02，客服 写道:\n{QUOTED}",
        "好",
    ),
    (
        "gmail zh attribution wrapped over two lines",
        "谢谢\n\nExample Support <support@example.com> 于2026年11月24日周二\n"
        "10:02写道：\n\n> 您好\n",
        "谢谢",
    ),
    (
        "gmail zh attribution on one line, quote laid out from HTML",
        "谢谢\n\nExample Support <support@example.com> "
        f"于2026年11月24日周二 10:02写道：\n\n{QUOTED}",
        "谢谢",
    ),
    ("'>' quote with no attribution", "Agreed.\n\n> Shall we refund?\n>> earlier\n", "Agreed."),
    ("'-- ' signature", "Please hurry.\n\n-- \nTom Becker\nSales, Contoso\n", "Please hurry."),
    ("'--' signature without the space", "请尽快。\n--\n赵强\n138-0000-0000", "请尽快。"),
    ("Sent from my iPhone", "On my way.\n\nSent from my iPhone", "On my way."),
    ("发自我的iPhone", "好的\n\n发自我的iPhone", "好的"),
    ("发自我的 iPad", "好的\n发自我的 iPad", "好的"),
    ("发自我的华为手机", "可以\n\n发自我的华为手机\n", "可以"),
    ("来自网易邮箱大师", "收到\n\n来自网易邮箱大师", "收到"),
    ("发自网易邮箱大师", "收到\n\n发自网易邮箱大师", "收到"),
    ("Get Outlook for iOS", "Fine.\n\nGet Outlook for iOS<https://aka.ms/o0ukef>", "Fine."),
    ("获取 Outlook for Android", "好\n\n获取 Outlook for Android", "好"),
    ("Sent from my Galaxy", "Yes\n\nSent from my Galaxy", "Yes"),
    ("Sent from my Huawei phone", "Yes\nSent from my Huawei phone", "Yes"),
    ("Sent from Mail for Windows", "Yes\n\nSent from Mail for Windows", "Yes"),
    ("outlook zh Original Message separator", "好\n\n-----邮件原件-----\n发件人: 客服", "好"),
    (
        "outlook header block for a sender shown without address",
        "Noted.\n\nFrom: Brown, Michael\nSent: Tuesday, November 24, 2026 10:02 AM\n"
        f"To: Support\nSubject: RE: refund\n\n{QUOTED}",
        "Noted.",
    ),
    ("从我的 iPhone 发送", "好的\n\n从我的 iPhone 发送", "好的"),
]


@pytest.mark.parametrize(("shows", "reply", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_client_marker_ends_the_new_text(shows: str, reply: str, expected: str) -> None:
    assert strip_quotes(reply) == expected


KEPT = [
    # (what it shows, a text with no quote in it)
    (
        "a forwarded order confirmation is evidence, not history",
        "See below, it never arrived.\n\n---------- Forwarded message ---------\n"
        "From: Shop <orders@shop.example>\nDate: Mon, Nov 2, 2026 at 9:00 AM\n"
        "Subject: Your order A-1\nTo: <emily@gmail.com>\n\nOrder A-1 has shipped.",
    ),
    (
        "a parcel's sender and recipient are not a mail header",
        "快递信息如下：\n发件人：张伟\n收件人：李娜\n时间：11月1日\n主题：生日礼物\n到现在还没收到。",
    ),
    (
        "a complaint quoting what the agent wrote",
        'On 20 November your agent wrote:\n"we will refund you"\nbut nothing happened.',
    ),
    (
        "zh complaint quoting what the agent wrote",
        "在2026年11月1日，你们客服在邮件里写道：\n会在三天内退款。\n到现在也没有退。",
    ),
    (
        "a '--' used as a divider in a long text",
        "Problem one.\n--\n" + "\n".join(f"Detail {n}." for n in range(20)),
    ),
    ("'Sent from' inside a sentence", "The parcel was sent from my old address by mistake."),
    (
        "a line starting 'Sent from my' that names no device",
        "Sent from my work address, not my home.\nPlease reply to both.",
    ),
    ("发自 inside a sentence", "这个包裹发自我的老家，但是到现在还没到。"),
    ("a line starting with From: alone", "From: Beijing, order A-1.\nStill waiting."),
]


@pytest.mark.parametrize(("shows", "text"), KEPT, ids=[k[0] for k in KEPT])
def test_text_without_a_quote_is_kept_whole(shows: str, text: str) -> None:
    assert strip_quotes(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "> only a quote\n> nothing new\n",
        "-----Original Message-----\nFrom: Support\nSent: Tuesday\n\nHello",
        "\n\nOn Tue, Nov 24, 2026 at 10:02 AM Support <support@example.com> wrote:\nHello\n",
        "发自我的iPhone\n\n> 在 2026年11月24日，10:02，客服 <support@example.com> 写道：\n> 您好\n",
    ],
)
def test_all_quoted_gives_the_original_stripped_never_empty(text: str) -> None:
    assert strip_quotes(text) == text.strip()


@pytest.mark.parametrize("text", ["", "   ", "\n\n"])
def test_blank_text_stays_blank(text: str) -> None:
    assert strip_quotes(text) == ""


def test_blank_lines_left_by_a_dropped_quote_collapse() -> None:
    reply = "First answer.\n\n> q1\n\n\n> q2\n\nSecond answer.\n"
    assert strip_quotes(reply) == "First answer.\n\nSecond answer."


def test_nested_separator_inside_a_quote_does_not_cut_the_answer_below_it() -> None:
    reply = (
        "On 24/11/2026 10:02, Support wrote:\n> Hello\n> -----Original Message-----\n"
        "> From: me\n\nMy answer below the quote."
    )
    assert strip_quotes(reply) == "My answer below the quote."
