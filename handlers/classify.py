"""Category and priority of a new case from keyword rules (the config's first, then built-ins)."""

from __future__ import annotations

import re

from daemon.config import ClassifyRule, Config
from handlers.pipeline import BlobWriter, Prepared


def _rule(pattern: str, category: str | None = None, priority: str | None = None) -> ClassifyRule:
    return ClassifyRule(
        match=re.compile(pattern, re.IGNORECASE), category=category, priority=priority
    )


BUILT_IN_RULES: tuple[ClassifyRule, ...] = (
    _rule(
        r"爆炸|起火|着火|触电|烫伤|烧伤|受伤|中毒|过敏|窒息|儿童.{0,6}(危险|误食)|"
        r"explo|caught fire|on fire|electric shock|injur|burn(ed|s)? |poison|allerg|chok",
        priority="urgent",
    ),
    _rule(
        r"多人|集体|群体|大量消费者|many customers|class action|group complaint", priority="urgent"
    ),
    _rule(r"食品|食物|变质|过期|异物|霉|food|expired|spoiled|mould|mold", "food_safety"),
    _rule(r"个人信息|隐私|泄露|骚扰电话|privacy|personal data|data leak|spam calls", "privacy"),
    _rule(
        r"虚假宣传|夸大|广告|与描述不符|misleading|false advertising|not as described",
        "false_advertising",
    ),
    _rule(r"快递|物流|配送|发货|送货|包裹|deliver|shipping|courier|parcel|tracking", "logistics"),
    _rule(r"价格|多收|收费|乱收费|价格欺诈|差价|overcharg|price|pricing|charged twice", "price"),
    _rule(
        r"态度|辱骂|不理|推诿|客服.{0,4}(差|恶劣)|rude|impolite|attitude|ignored",
        "service_attitude",
    ),
    _rule(
        r"售后|退货|退款|换货|维修|保修|三包|refund|return|repair|warranty|exchange", "after_sales"
    ),
    _rule(
        r"质量|故障|损坏|坏了|破损|爆炸|漏|缺陷|quality|defect|broken|faulty|stopped working",
        "product_quality",
    ),
)


def classify(text: str, rules: tuple[ClassifyRule, ...]) -> tuple[str, str]:
    """(category, priority): each set by the first rule that matches and names it."""
    category: str | None = None
    priority: str | None = None
    for rule in rules + BUILT_IN_RULES:
        if (category is None and rule.category) or (priority is None and rule.priority):
            if not rule.match.search(text):
                continue
            category = category or rule.category
            priority = priority or rule.priority
        if category and priority:
            break
    return category or "other", priority or "normal"


_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN_WORD = re.compile(r"[A-Za-z]{2,}")


def detect_language(text: str, default: str) -> str:
    """zh-CN or en from the consumer's own words (a name or an order code does not decide)."""
    sample = text[:4000]
    cjk = len(_CJK.findall(sample))
    words = len(_LATIN_WORD.findall(sample))
    if cjk >= 2 and cjk >= words:
        return "zh-CN"
    if words >= 3 and cjk < words:
        return "en"
    return default


class Classify:
    name = "classify"
    description = "language, category and priority of a message from the consumer's own words"

    def process(self, prep: Prepared, config: Config, blobs: BlobWriter) -> None:
        if prep.automatic or prep.message is None:
            return
        text = f"{prep.message.subject}\n{prep.new_text or prep.message.text}"
        if prep.channel != "form":  # a form row's language comes from its own words already
            prep.language = detect_language(text, config.tickets.default_language)
        prep.category, prep.priority = classify(text, config.rules)
