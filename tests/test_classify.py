"""Classification, priority and suggested rejection over a corpus of real-shaped complaints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from daemon.config import LANGUAGES, ClassifyRule
from daemon.settings import CATEGORIES
from handlers.classify import (
    Keywords,
    classify,
    detect_language,
    group_words,
    safety_risk,
    scanned,
    suggest_rejection,
)
from handlers.parse import parse_message
from handlers.quotes import strip_quotes
from handlers.rejection import CODES, REASONS, consumer_reason, staff_hint

CORPUS = sorted((Path(__file__).parent / "data" / "complaints").glob("*.eml"))


def _words(path: Path) -> tuple[str, dict[str, str]]:
    """What Classify looks at (subject + the sender's own words) and the X-Expect-* headers."""
    message = parse_message(path.read_bytes())
    expect = {k[9:]: v for k, v in message.headers.items() if k.startswith("x-expect-")}
    return f"{message.subject}\n{strip_quotes(message.text)}", expect


def test_the_corpus_is_large_and_in_both_languages() -> None:
    assert len(CORPUS) >= 40
    languages = {detect_language(_words(p)[0], "en") for p in CORPUS}
    assert languages == {"zh-CN", "en"}
    categories = {_words(p)[1]["category"] for p in CORPUS}
    assert categories == {
        "product_quality",
        "service_attitude",
        "logistics",
        "price",
        "after_sales",
        "false_advertising",
        "food_safety",
        "privacy",
        "other",
    }


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_complaint_gets_its_category_priority_and_rejection_hint(path: Path) -> None:
    text, expect = _words(path)
    assert classify(text, ()) == (expect["category"], expect["priority"])
    assert suggest_rejection(text, ()) == expect.get("reject")


@pytest.mark.parametrize(
    "text",
    [
        "压力锅爆炸了，把我孩子烫伤了",
        "The pressure cooker exploded and burned my son.",
        "电暖器漏电，我妈妈触电了",
        "充电宝着火了",
        "一家人吃了之后食物中毒",
        "吃了以后严重过敏，送医抢救",
        "The charger caught fire overnight.",
        "My daughter got an electric shock from the lamp.",
        "She was badly hurt when the shelf collapsed.",
        "We all got food poisoning from the takeaway.",
        "My toddler choked on a small part.",
        "虽然没有说明书，孩子还是烫伤了",  # the negation is about something else
        "Not only did it explode, my son was burned.",
        "二十多位家长集体投诉",
        "Many of us bought the same heater.",
    ],
)
def test_safety_risks_and_group_words_are_urgent(text: str) -> None:
    assert classify(text, ())[1] == "urgent"


@pytest.mark.parametrize(
    "text",
    [
        "没有人受伤，但是锅盖飞了出去",
        "幸好没有起火",
        "孩子没有受伤",
        "无人受伤",
        "No one was injured, but the lid flew off.",
        "Nobody got hurt.",
        "Luckily it didn't catch fire.",
        "There were no injuries.",
        "I live in Burnaby and the parcel is late.",
        "The firewall on the router keeps resetting.",
        "They fired the courier company.",
        "I was shocked by how rude the staff were.",
        "这真是个爆炸性新闻，快递居然准时到了",
        "我都气炸了，客服一直不理我",
        "电脑中毒了，售后不管",
        "我的心灵受伤了，客服态度太差",
        "点了多人套餐，分量太少",
        "信息爆炸的时代，广告太多",
    ],
)
def test_negations_and_look_alikes_are_not_urgent(text: str) -> None:
    assert classify(text, ())[1] == "normal"
    assert safety_risk(text) is None


def test_config_rules_come_before_the_built_ins() -> None:
    rules = (
        ClassifyRule(match=re.compile("kettle", re.I), category="after_sales"),
        ClassifyRule(match=re.compile("VIP", re.I), priority="high"),
        ClassifyRule(match=re.compile("demo fire", re.I), priority="low"),
    )
    assert classify("My kettle is broken and faulty", rules) == ("after_sales", "normal")
    assert classify("VIP customer: the lamp exploded", rules) == ("product_quality", "high")
    assert classify("demo fire drill: caught fire", rules)[1] == "low"
    assert classify("nothing to see", rules) == ("other", "normal")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("我们公司从批发商那里进货的一批货有问题", "b2b"),
        ("经营者之间的购销纠纷", "b2b"),
        ("We bought 200 units wholesale for our shop.", "b2b"),
        ("在闲鱼上从个人卖家买的二手手机", "private_trade"),
        ("这是个人私下交易", "private_trade"),
        ("Bought it from a private seller on Craigslist.", "private_trade"),
        ("已经超过保修期了", "beyond_warranty"),
        ("过了保修期一个月就坏了", "beyond_warranty"),
        ("It is out of warranty now.", "beyond_warranty"),
        ("The warranty expired in March.", "beyond_warranty"),
        ("买的是处理品，当时说明了有瑕疵", "seconds"),
        ("Sold as seen, ex-display model.", "seconds"),
        ("我已经向法院起诉了", "court_or_arbitration"),
        ("仲裁委已经受理了", "court_or_arbitration"),
        ("I have already filed a claim in court.", "court_or_arbitration"),
        ("The case is now pending before the district court.", "court_or_arbitration"),
        ("不知道是哪家公司，网站已经打不开了", "no_respondent"),
        ("The shop has closed down and I can't find the seller.", "no_respondent"),
    ],
)
def test_out_of_scope_reasons_are_suggested(text: str, reason: str) -> None:
    assert suggest_rejection(text, ()) == reason
    assert reason in CODES


@pytest.mark.parametrize(
    "text",
    [
        "如果不解决，我将向法院起诉",
        "I will take you to court if this is not fixed.",
        "没有超过保修期",
        "还在保修期内，售后却说过了保修期",
        "The store says it is out of warranty, but I bought it in May.",
        "不是私下交易，是在官方旗舰店买的",
        "It is not out of warranty.",
        "压力锅爆炸了，孩子烫伤",
    ],
)
def test_threats_denials_and_business_claims_suggest_nothing(text: str) -> None:
    assert suggest_rejection(text, ()) is None


def test_a_config_rule_reason_comes_first_and_is_given_as_written() -> None:
    rules = (
        ClassifyRule(match=re.compile("lottery", re.I), reject_reason="not a consumer matter"),
        ClassifyRule(match=re.compile("kettle", re.I), category="after_sales"),
    )
    assert suggest_rejection("lottery prize bought wholesale", rules) == "not a consumer matter"
    assert suggest_rejection("kettle bought wholesale for our shop", rules) == "b2b"


def test_every_reason_has_a_staff_label_and_notice_words_in_both_languages() -> None:
    for reason in REASONS:
        assert set(reason.for_staff) == set(reason.for_consumer) == set(LANGUAGES), reason.code
    assert staff_hint("b2b", "zh-CN").startswith("经营者之间")
    assert staff_hint("not a consumer matter", "en") == "not a consumer matter"
    assert consumer_reason("no_respondent", "en").startswith("we could not identify")
    assert consumer_reason("sold by a ghost", "zh-CN") == "sold by a ghost"


def test_the_demand_does_not_decide_the_category() -> None:
    assert classify("电饭煲用了三天就坏了，要求退货退款。", ())[0] == "product_quality"
    assert classify("已退货三天，还没有收到退款，寄回的单号是SF123", ())[0] == "after_sales"


def test_keywords_in_both_scripts_are_found_in_one_text() -> None:
    # Each script has its own scan; a text holding both is read by both.
    assert (
        classify("手机屏幕裂了 and the courier is rude, rude, rude, hung up, ignored me", ())[0]
        == "service_attitude"
    )
    assert safety_risk("The heater 冒烟 then caught fire") == "冒烟"  # the first one in the text
    assert safety_risk("It caught fire, 冒烟了") == "caught fire"
    assert safety_risk("没有人受伤, but the Kettle EXPLODED") == "exploded"
    assert group_words("We are 30 families; 很多人都上当 buying it") == "we are 30 families"
    assert group_words("很多人都上当 buying it: we are 30 families") == "很多人都上当"


def test_english_keywords_must_be_written_lowercase() -> None:
    # Scans read the lowercased text, so an uppercase keyword (or \W, \S) could never match.
    with pytest.raises(ValueError, match="lowercase"):
        Keywords(r"\bA&E\b")
    found = Keywords(r"\ba&e\b", "急诊").search(scanned("Sent to A&E last night"))
    assert found is not None and found.group(0) == "a&e"


def test_english_words_written_against_chinese_or_with_a_dotted_capital_i_still_count() -> None:
    # "swallowed油炸锅": the English word ends where the Chinese begins (ASCII boundaries);
    # "İ".lower() would add a combining dot that splits "INJURED".
    assert safety_risk("孩子 the kid nearly swallowed油炸锅") == "kid nearly swallowed"
    assert classify("İNJURED by the kettle", ())[1] == "urgent"
    assert safety_risk("HOSPİTAL visit") == "hospital"
    # "repair[a-z]*" no longer runs on into the Chinese after it and swallows a second word.
    assert classify("the repair没有退款", ())[0] == "after_sales"


EVERYDAY = Path(__file__).parent / "data" / "classify_everyday.jsonl"


def _everyday() -> list[dict[str, str]]:
    rows = [json.loads(line) for line in EVERYDAY.read_text(encoding="utf-8").splitlines()]
    assert "GENERATED" in rows[0]["generated"]  # the header line: written here, not real data
    return rows[1:]


def test_everyday_complaints_in_three_scripts_are_classified() -> None:
    # 229 short complaints written for this test in simplified, traditional and English. The
    # keywords before traditional conversion and everyday faults scored 0.712; now 0.996.
    rows = _everyday()
    assert len(rows) >= 200
    assert {row["category"] for row in rows} == set(CATEGORIES)
    right = sum(classify(row["text"], ())[0] == row["category"] for row in rows)
    assert right / len(rows) >= 0.95


@pytest.mark.parametrize(
    "text",
    ["电视屏幕竖线", "the sole came off", "手機無法開機", "My laptop won't charge", "鞋子开胶了"],
)
def test_plain_product_faults_are_product_quality_and_not_urgent(text: str) -> None:
    assert classify(text, ()) == ("product_quality", "normal")


@pytest.mark.parametrize(
    "text",
    [
        "Someone used my social security number to apply for goods and services.",
        "A company used my personally identifiable information without my authorization.",
        "Experian shows an inquiry I never made: my credit report was pulled.",
        "有人冒用我的身份信息办了贷款，征信上多了查询记录",
    ],
)
def test_identity_misuse_and_credit_report_complaints_are_privacy(text: str) -> None:
    assert classify(text, ())[0] == "privacy"


def test_traditional_chinese_is_read_as_simplified() -> None:
    assert classify("電暖器冒煙，孩子的手被燙傷了", ())[1] == "urgent"
    assert classify("店員態度很差，還罵人", ())[0] == "service_attitude"
    # Characters that simplified text also uses are kept: 著名 stays, not 着名.
    assert scanned("著名品牌").text == "著名品牌"
    assert scanned("手機").text == "手机"


# -- real complaints (tests/data/real/SOURCES.md) -----------------------------------------------
# The held-out part was never tuned on. These pin what the rules and a desk's model do on real
# published complaints, so a change to the rules that loses ground fails here; the README and
# bench/classify_real.py give the full figures.
REAL = Path(__file__).parent / "data" / "real"


def _real(name: str) -> list[dict[str, object]]:
    lines = (REAL / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def test_real_complaints_are_recorded_with_source_and_licence() -> None:
    rows = _real("dev.jsonl") + _real("heldout.jsonl")
    assert len(rows) >= 300
    assert {r["lang"] for r in rows} == {"en", "zh"}
    assert all(r["source"] and r["licence"] and r["label_from"] for r in rows)
    assert all(isinstance(r["states_harm"], bool) for r in rows)
    assert len({r["id"] for r in rows}) == len(rows)


def test_on_held_out_real_complaints_harm_is_urgent_and_few_are_other() -> None:
    rows = _real("heldout.jsonl")
    said = {str(r["id"]): classify(str(r["text"]), ()) for r in rows}
    # The measure: texts that state harm (an independent reader's states_harm) are
    # urgent (issue: 13 of 15); ordinary ones (no flag, no harm stated) at most 3 in 100.
    stated = [said[str(r["id"])][1] for r in rows if r["states_harm"]]
    plain = [said[str(r["id"])][1] for r in rows if not r["urgent"] and not r["states_harm"]]
    assert len(stated) >= 15 and stated.count("urgent") >= 13 / 15 * len(stated)
    assert len(plain) >= 100 and plain.count("urgent") <= 0.03 * len(plain)
    assert sum(c == "other" for c, _ in said.values()) / len(rows) <= 0.25
    # NHTSA's crash/fire/injury flags, some on texts that never say so: a floor
    flagged = [said[str(r["id"])][1] for r in rows if r["urgent"]]
    assert flagged.count("urgent") >= 0.7 * len(flagged)
    # Credit reports pulled or used without permission, identity theft: privacy (issue: 2 of 3)
    misuse = ("Improper use of your report", "identity theft", "belongs to someone else")
    credit = [said[str(r["id"])][0] for r in rows if any(k in str(r["label_from"]) for k in misuse)]
    assert len(credit) >= 15 and credit.count("privacy") >= 2 / 3 * len(credit)


def test_a_model_trained_on_a_desks_real_labels_beats_the_rules_on_its_held_out_cases() -> None:
    from daemon.classifycmd import Labelled, evaluate
    from daemon.config import EMBEDDED, build
    from handlers import textmodel

    dev, held = _real("dev.jsonl"), _real("heldout.jsonl")
    model = textmodel.fit(
        [str(r["text"]) for r in dev],
        [str(r["category"]) for r in dev],
        [None] * len(dev),
        meta={"trained_at": "test"},
    )
    rows = [Labelled(str(r["id"]), str(r["text"]), str(r["category"]), None, bool(r["urgent"]))
            for r in held]  # fmt: skip
    rules, _, both = evaluate(rows, build({}, file=EMBEDDED, base=REAL), model)
    assert both.accuracy >= rules.accuracy + 0.10
    assert both.urgent_found >= rules.urgent_found  # the safety words still apply
