"""Reasons a case is out of scope (PROCEDURE §4): the one table of codes and their words."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RejectionReason:
    """One reason code, in every language we write (daemon.config.LANGUAGES)."""

    code: str
    # For staff: what the rules saw, shown as a hint in staff mail (never sent to the consumer).
    for_staff: dict[str, str]
    # For the consumer: the "because ..." of the rejection notice (templates/*/rejected.*).
    for_consumer: dict[str, str]


# Adding a reason is one row here: staff mail lists it among the #reject codes, the case view
# labels it, and the notice explains it. The words that suggest it are in handlers/classify.py.
REASONS: tuple[RejectionReason, ...] = (
    RejectionReason(
        "b2b",
        for_staff={
            "zh-CN": "经营者之间的购销纠纷（进货、批发），不属于消费者投诉",
            "en": "dispute between businesses (wholesale, stock purchase), "
            "not a consumer complaint",
        },
        for_consumer={
            "zh-CN": "属于经营者之间的购销纠纷，不属于消费者投诉受理范围",
            "en": "it is a purchase dispute between businesses, which consumer complaint handling "
            "does not cover",
        },
    ),
    RejectionReason(
        "private_trade",
        for_staff={
            "zh-CN": "个人之间的私下交易（含二手个人卖家），无经营者",
            "en": "private trade between individuals (incl. second-hand private sellers)",
        },
        for_consumer={
            "zh-CN": "属于个人之间的私下交易，不涉及经营者",
            "en": "it concerns a private trade between individuals, not a purchase from a business",
        },
    ),
    RejectionReason(
        "beyond_warranty",
        for_staff={
            "zh-CN": "商品已超过保修期或合格证有效期",
            "en": "goods beyond their warranty or certificate period",
        },
        for_consumer={
            "zh-CN": "商品已超过保修期或合格证标明的期限",
            "en": "the goods are beyond their warranty or certificate period",
        },
    ),
    RejectionReason(
        "seconds",
        for_staff={
            "zh-CN": "商品按处理品/瑕疵品出售且已如实说明原因（请核实是否说明）",
            "en": "goods sold marked as seconds/clearance with the reason stated (check it was)",
        },
        for_consumer={
            "zh-CN": "商品作为处理品出售，且销售时已如实说明原因",
            "en": "the goods were sold as seconds or clearance items and the reason was stated "
            "at the time of sale",
        },
    ),
    RejectionReason(
        "court_or_arbitration",
        for_staff={
            "zh-CN": "已向法院起诉或已申请仲裁",
            "en": "already before a court or in arbitration",
        },
        for_consumer={
            "zh-CN": "该争议已由法院或仲裁机构受理",
            "en": "the dispute is already before a court or an arbitration body",
        },
    ),
    RejectionReason(
        "no_respondent",
        for_staff={
            "zh-CN": "被投诉方无法确认",
            "en": "no identifiable respondent",
        },
        for_consumer={
            "zh-CN": "无法确定被投诉的经营者",
            "en": "we could not identify the business the complaint is about",
        },
    ),
)
BY_CODE = {reason.code: reason for reason in REASONS}
CODES = tuple(BY_CODE)


def _words(table: dict[str, str], language: str) -> str:
    return table.get(language) or table["en"]


def staff_hint(reason: str, language: str) -> str:
    """A staff-facing label for a reason code; a config rule's own text comes back as it is."""
    found = BY_CODE.get(reason)
    return _words(found.for_staff, language) if found else reason


def consumer_reason(reason: str, language: str) -> str:
    """The notice's words for a reason code; staff's own words come back as they are."""
    found = BY_CODE.get(reason)
    return _words(found.for_consumer, language) if found else reason
