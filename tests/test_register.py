"""Registration fields from complaint mail, missing essentials, replies."""

from __future__ import annotations

import random
import re
from datetime import date
from pathlib import Path

import pytest

from daemon import config as configmod
from daemon.items import Incoming
from handlers.context import Prepared
from handlers.pipeline import prepare
from handlers.register import (
    Register,
    complainant_name,
    extract_fields,
    find_amount,
    find_demand,
    find_order_number,
    find_phone,
    find_purchase_date,
    find_respondent,
    merge_reply,
    missing_essentials,
    sentences,
)

TODAY = date(2026, 11, 24)


@pytest.mark.parametrize(
    ("text", "phone"),
    [
        ("手机：13812345678", "13812345678"),
        ("电话13812345678", "13812345678"),
        ("call me on +86 139 1000 2233", "13910002233"),
        ("联系方式 138-1234-5678", "13812345678"),
        ("Tel: 0086-15900001111", "15900001111"),
        ("座机 010-87654321", "010-87654321"),
        ("(0755) 2345 678", None),  # seven digits split by a space: not a number we trust
        ("(0755)23456789 转 123", "0755-23456789-123"),
        ("订单号 2026110512345678", None),  # a mobile-shaped run inside a longer number
        ("12812345678", None),  # no such mobile prefix
    ],
)
def test_phone_numbers(text: str, phone: str | None) -> None:
    assert find_phone(text) == phone


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("订单号：2026110112345678，金额", "2026110112345678"),
        ("订单编号 SN20261108773421", "SN20261108773421"),
        ("订单号为 TB5566778899001", "TB5566778899001"),
        ("Order no. KP-55120934", "KP-55120934"),
        ("order #A12345678 arrived broken", "A12345678"),
        ("Order ID: 112-1234567-1234567", "112-1234567-1234567"),
        ("订单号：ＳＮ２０２６１１０８", "SN20261108"),  # full-width, typed on a Chinese keyboard
        ("my order was late", None),
        ("order number: ABCDEF", None),  # no digits: not an order id
    ],
)
def test_order_numbers(text: str, number: str | None) -> None:
    assert find_order_number(text) == number


@pytest.mark.parametrize(
    ("text", "amount"),
    [
        ("金额￥1,299.00元", "1299.00"),
        ("花了899元", "899.00"),
        ("price ¥ 45.5", "45.50"),
        ("paid RMB 329", "329.00"),
        ("CNY 12,000", "12000.00"),
        ("a 4,599 yuan air conditioner", "4599.00"),
        ("二十块钱", None),
        ("共 3 件", None),
        ("2026年11月1日", None),
        # the total, not the first figure
        ("单价299元，买了3个，共897元", "897.00"),
        ("The unit price was 30 yuan, a total of 450 yuan.", "450.00"),
        ("订单金额：¥3999，已付定金500元", "3999.00"),
    ],
)
def test_amounts(text: str, amount: str | None) -> None:
    assert find_amount(text) == amount


@pytest.mark.parametrize(
    ("text", "day"),
    [
        ("2026-11-01 下单", "2026-11-01"),
        ("bought 2026/11/01", "2026-11-01"),
        ("2026年11月1日购买", "2026-11-01"),
        ("11月1日在京东买的", "2026-11-01"),
        ("12月20日买的", "2025-12-20"),  # later in the year than today: last year
        ("bought it on 1 Nov 2026", "2026-11-01"),
        ("ordered on Nov 2, 2026", "2026-11-02"),
        ("purchased on the 3rd of November", "2026-11-03"),
        ("收到货是11月20日，11月2日下的单", "2026-11-02"),  # the date next to the purchase
        ("2027-01-01", None),  # in the future
        ("2026-13-01", None),
        ("no date here", None),
        # the day it broke is not the day it was bought
        ("The kettle I bought broke on 20 November.", None),
        ("我买的电饭煲11月20日坏了", None),
        ("电饭煲11月20日出现故障，是10月3日购买的", "2026-10-03"),
        ("I bought it on 1 Nov and it broke on 20 Nov.", "2026-11-01"),
    ],
)
def test_purchase_dates(text: str, day: str | None) -> None:
    assert find_purchase_date(text, TODAY) == day


def test_a_day_without_a_year_needs_a_reference_date() -> None:
    assert find_purchase_date("11月1日在京东买的", None) is None
    assert find_purchase_date("2026年11月1日在京东买的", None) == "2026-11-01"


@pytest.mark.parametrize(
    ("text", "respondent"),
    [
        ("被投诉方：上海某某电器有限公司\n诉求：退款", "上海某某电器有限公司"),
        ("商家：小米之家（朝阳大悦城店）。", "小米之家（朝阳大悦城店）"),
        ("店铺：美的官方旗舰店", "美的官方旗舰店"),
        ("11月3日在京东自营旗舰店买的", "京东自营旗舰店"),
        ("我在11月1日在苏宁易购购买了一台电视", "苏宁易购"),
        ('在天猫"美的官方旗舰店"买的水壶', "美的官方旗舰店"),
        ("在美团上点了“好味道餐厅”的外卖", "好味道餐厅"),
        ("Respondent: MegaMart (Burnaby)\nOrder", "MegaMart (Burnaby)"),
        (
            "I want to file a complaint against Acme Appliances Ltd. They lied.",
            "Acme Appliances Ltd",
        ),
        ("I bought a kettle from Best Electronics on 1 Nov.", "Best Electronics"),
        ("Shop: Happy Hotpot", "Happy Hotpot"),
        ("我在网上购买了一件衣服", None),
        ("I bought it from a private seller.", None),
        ("complaint against your company", None),
        ("11月5日在贵店买的加湿器", None),
    ],
)
def test_respondents(text: str, respondent: str | None) -> None:
    assert find_respondent(text) == respondent


@pytest.mark.parametrize(
    ("text", "demand"),
    [
        ("要求退款并赔偿，商家道歉。", "refund,compensation,apology"),
        ("希望换一个新的", "exchange"),
        ("诉求：不要换货，只要退款", "refund"),
        ("要求退货退款", "refund,return"),
        ("请尽快维修", "repair"),
        ("I want a full refund and an apology.", "refund,apology"),
        ("We request a repair or replacement.", "exchange,repair"),
        ("I don't want a refund, I would like a replacement.", "exchange"),
        # the sentences that ask decide, not a story mentioning a past repair
        ("It was sent for repair twice. I want my money back.", "refund"),
        ("The kettle leaks.", None),
    ],
)
def test_demands(text: str, demand: str | None) -> None:
    assert find_demand(text) == demand


# What find_demand split sentences with before: one regex, which backtracked in quadratic time
# on a long line without a full stop. sentences() must find exactly what it found.
OLD_SENTENCE = re.compile(r"(?:[^。！？!?\n.]|\.(?!\s|$))+(?:[。！？!?.]|$)")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "要求退款。商家道歉！",
        "line without a stop\nnext line.",
        "a line ending in v1.2 then text\nmore",  # up to the last full stop of the line
        "3.5 kg. Then\n",  # a final newline ends the text
        "no stop at all",
        ". . ..\n\n.a.b.\n",
        "see example.com/refund. I want it!? yes\u3000ok",
        "..x\nabc.",
    ],
)
def test_sentences_are_what_the_old_sentence_regex_found(text: str) -> None:
    assert sentences(text) == [m.group(0) for m in OLD_SENTENCE.finditer(text)]


def test_sentences_match_the_old_regex_on_random_text() -> None:
    rng = random.Random(14)
    pieces = ["a", "要求", "退款", ".", ". ", "。", "！", "?", "\n", " ", "3.5", "..", "\u3000"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randrange(12)))
        assert sentences(text) == [m.group(0) for m in OLD_SENTENCE.finditer(text)], text


@pytest.mark.parametrize(
    ("text", "demand", "day"),
    [
        # İ ı ſ K are the letters IGNORECASE folds onto ASCII: English still reads there
        ("PLEAſE REFUND me. I BOUGHT it on 3 MARCH 2026.", "refund", "2026-03-03"),
        ("İ want my money back, bought on 4 Mar 2026.", "refund", "2026-03-04"),
        ("Please Repair it; ordered on Sept 9, 2026 (\u212a)", "repair", "2026-09-09"),
    ],
)
def test_english_words_and_dates_match_in_any_case(text: str, demand: str, day: str) -> None:
    assert (find_demand(text), find_purchase_date(text, TODAY)) == (demand, day)


def test_extract_fields_gives_only_what_it_found_under_the_agreed_names() -> None:
    text = (
        "我于2026年11月8日在苏宁易购购买了压力锅，订单号：SN20261108773421，金额￥459.00元。"
        "要求退款和赔偿。联系电话：138 1234 5678"
    )
    assert extract_fields(text, TODAY) == {
        "phone": "13812345678",
        "respondent": "苏宁易购",
        "order_number": "SN20261108773421",
        "purchase_date": "2026-11-08",
        "amount": "459.00",
        "demand": "refund,compensation",
    }
    assert extract_fields("hello", TODAY) == {}


@pytest.mark.parametrize(
    ("fields", "name", "description", "category", "missing"),
    [
        ({"respondent": "A", "amount": "1.00"}, "Jane", "The kettle leaks badly", None, []),
        ({}, "", "", None, ["name", "respondent", "purchase", "description"]),
        ({"respondent": "A"}, "张三", "水壶漏水漏电了", None, ["purchase"]),
        ({"order_number": "X1234"}, "张三", "水壶漏水漏电了", None, ["respondent"]),
        (
            {"purchase_date": "2026-11-01", "respondent": "A"},
            "Jane",
            "see attached",
            None,
            ["description"],
        ),
        ({"respondent": "A"}, "Jane", "They sold my personal data", "privacy", []),
        # sent to the business itself: it is the respondent
        ({"amount": "9.00"}, "李喆", "11月5日在贵店买的加湿器无法开机", None, []),
        ({"amount": "9.00"}, "Jane", "The kettle from your store leaks", None, []),
    ],
)
def test_missing_essentials_of_a_mail(
    fields: dict[str, str], name: str, description: str, category: str | None, missing: list[str]
) -> None:
    assert missing_essentials(fields, name, description, category) == missing


def test_a_reply_fills_only_the_gaps() -> None:
    existing = {"respondent": "苏宁易购", "amount": "459.00"}
    reply = "订单号：SN20261108773421，11月8日买的，花了500元。被投诉方：国美。姓名：李芳"
    assert merge_reply(existing, reply, TODAY) == {
        "order_number": "SN20261108773421",
        "purchase_date": "2026-11-08",
        "name": "李芳",
    }
    assert merge_reply(existing, "好的，谢谢", TODAY) == {}


def _mail(sender: str, body: str, subject: str = "投诉") -> bytes:
    return (
        f"From: {sender}\r\nTo: complaints@caseloop.example\r\nSubject: {subject}\r\n"
        "Date: Mon, 23 Nov 2026 20:15:00 +0800\r\nMessage-ID: <r1@example.cn>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n" + body
    ).encode("utf-8")


class _Blobs:
    def put(self, data: bytes) -> str:
        return "0" * 64


def _prepare(tmp_path: Path, raw: bytes) -> Prepared:
    path = tmp_path / "caseloop.toml"
    path.write_text('data_dir = "d"\n', encoding="utf-8")
    config = configmod.load(path)
    item = Incoming(source="t", key="k", raw=raw, label="t")
    return prepare(item, config, _Blobs())  # the mail pipeline: parse, loop guard, rules, register


def test_register_fills_fields_from_the_mail_and_asks_for_the_rest(tmp_path: Path) -> None:
    body = (
        "11月1日在京东买的电水壶，花了99元，用了两周就漏水了。要求换货。\n\n"
        "-- \n王强\n手机 139-0000-1111\n"
    )
    prep = _prepare(tmp_path, _mail("wq@example.cn", body))
    assert prep.fields == {
        "respondent": "京东",
        "purchase_date": "2026-11-01",  # the year from the mail's own Date
        "amount": "99.00",
        "demand": "exchange",
        "phone": "13900001111",  # from the signature, which the quote stripper drops
        "name": "王强",  # no display name in From: the signature gives it
    }
    assert prep.missing == []


def test_register_never_overrides_and_leaves_robots_and_forms_alone(tmp_path: Path) -> None:
    prep = _prepare(tmp_path, _mail("Jane Doe <jane@example.org>", "It broke, I want a refund."))
    assert prep.fields == {"demand": "refund"}
    assert prep.missing == ["respondent", "purchase"]
    register = Register()
    prep.fields = {"respondent": "Kept As Is"}
    prep.new_text = "I bought it from Other Shop on 1 Nov 2026 for ¥10."
    register.process(prep, prep_config(tmp_path), _Blobs())
    assert prep.fields["respondent"] == "Kept As Is"
    assert prep.fields["amount"] == "10.00"
    for change in ({"channel": "form"}, {"automatic": "auto-replied"}):
        other = _prepare(tmp_path, _mail("jane@example.org", "Bought from Acme for ¥5."))
        other.fields, other.missing = {}, []
        for key, value in change.items():
            setattr(other, key, value)
        register.process(other, prep_config(tmp_path), _Blobs())
        assert other.fields == {} and other.missing == []


def prep_config(tmp_path: Path) -> configmod.Config:
    return configmod.load(tmp_path / "caseloop.toml")


@pytest.mark.parametrize(
    ("display", "address", "name"),
    [
        ("Zhao", "zhao@example.net", "Zhao"),  # a person wrote it, even as their mailbox name
        ("zhao", "zhao@example.net", None),  # only the address repeated
        ("li.lei@example.net", "li.lei@example.net", None),
        ("李雷", "li.lei@example.net", "李雷"),
    ],
)
def test_the_from_display_name_is_a_name_unless_it_only_repeats_the_address(
    display: str, address: str, name: str | None
) -> None:
    assert complainant_name(display, address, "电水壶漏水。") == name
