"""Group complaints (群体性投诉): many consumers hit by ONE incident of one respondent.

Complaints form a group when they name the same respondent (register.normalise_respondent,
kept in respondent_key) and tell of the same product or model, batch, event or practice: their
gists (the salient words of subject and description: Chinese character bigrams, English word
stems and model numbers, without the respondent, order numbers, amounts, dates, phone numbers
and complaint boilerplate) are alike, Jaccard >= `[escalation] group_similarity`. When
`group_threshold` distinct complainants' cases within `group_window` are alike, they are one
group: every case of it becomes urgent and carries `extra["group"]` (the id is the number of
its first case; the size when the case joined). Later alike cases join it. Unrelated complaints
against a big retailer share little but the retailer's name, so they never are a group.

The supervisors hear of a group once a day at most (intent `group:<id>:<local date>:<who>`):
when it forms, then when it grows on a later day; never once per case.

Fast enough for intake: each case's gist is stored (extra["gist"]) when it opens, and the
latest `_POOL` cases of a respondent within the window are read once per transaction (one
batch) and kept current as the batch opens cases.
"""

from __future__ import annotations

import bisect
import operator
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.store import writes
from daemon.store.models import Ticket, TimelineEntry
from handlers import sla
from handlers.assign import CaseSummary
from handlers.context import Context
from handlers.intake import attach
from handlers.notify import queue_mail
from handlers.register import normalise_respondent
from handlers.scan import CJK

_POOL = 200  # recent cases of one respondent a new case is compared with

# -- the gist of a complaint -------------------------------------------------------------------

# Addresses, links, and any run of digits with its separators and units: order numbers, phone
# numbers, amounts, dates and times. Model numbers mixing letters and digits are kept (below).
# Each is looked for only when its mark is in the text: "\S+@" tried at every character of a
# long Chinese run (no spaces) costs more than the rest of the gist.
_ADDRESSES = re.compile(r"\S+@\S+")
_LINKS = re.compile(r"https?://\S+|www\.\S+")
_NUMBERS = re.compile(
    r"(?<![a-z0-9])[¥￥$]?\d[\d\s.,:/\-年月日号時时点分]*(元|块|円|usd|rmb|yuan|kg|km|公里|个月|天)?"
)
_CJK_RUN = re.compile(f"{CJK.pattern}+")
_WORD = re.compile(r"[a-z0-9]*(?:[a-z]\d|\d[a-z])[a-z0-9-]*|[a-z][a-z']+")
# Characters that glue sentences, not name things: a bigram with one says little ("池就").
_GLUE = frozenset(
    "的了就我你他她它们在是也都和与及说还又才被把给让从到对很太吗呢吧啊这那个着过而且或但却么"
)
_GLUE_ENDS_RUN = str.maketrans(dict.fromkeys(_GLUE, " "))
_DIGITS = frozenset("0123456789")
_NO_DIGITS = str.maketrans(dict.fromkeys(_DIGITS))
# What every complaint says, whatever it is about: greetings, the complaint itself, the
# business and its service desk, refunds and orders, the consumer's demands.
_BOILER_ZH = frozenset(
    """您好 你好 投诉 诉求 消费 费者 商家 店家 客服 售后 退款 退货 换货 订单
    单号 购买 买了 买的 我在 在贵 贵店 希望 要求 请求 处理 解决 尽快 谢谢
    感谢 联系 电话 姓名 地址 问题 时间 日期 金额 一个 没有 已经 但是 他们
    我们 这个 那个 什么 自己 现在 可以 不是 就是 还是 因为 所以 结果 然后
    之后 以后 时候 的时 一直 还没 至今 多次 几次 说是 表示 回复 答复 不给
    给我 我的 了一 一下 赔偿 维权 合法 权益 请你 你们 帮忙 麻烦 相关 部门
    情况 说明 反映 举报 官方 店铺 平台 网店 商城 旗舰 舰店 自营 专卖 卖店
    门店 商品 产品 东西 质量 使用 用了 下单 收到 到货 发货 快递 物流""".split()  # noqa: SIM905 (a word list reads best as text)
)
_BOILER_EN = frozenset(
    """the and for with that this was were have has had not but you your our they them their are
    from when what which would could should will been being into after before about just than
    then there here also very some any all out its it's i'm i've don't didn't can't won't dear
    hello thank thanks regards sincerely please complain complaint compla custom consum order
    purch bought buy store shop seller refund return contact phone email address name want asked
    asking still days weeks month week since again service suppo help issue probl amount date
    number""".split()  # noqa: SIM905 (a word list reads best as text)
)


def gist(subject: str, text: str, respondent: str | None) -> frozenset[str]:
    """The salient words of a complaint, to compare with others against the same respondent."""
    lowered = f"{subject}\n{text}".lower()
    name = (respondent or "").strip().lower()
    if name:
        lowered = lowered.replace(name, " ")
    if "@" in lowered:
        lowered = _ADDRESSES.sub(" ", lowered)
    if "http" in lowered or "www." in lowered:
        lowered = _LINKS.sub(" ", lowered)
    lowered = _NUMBERS.sub(" ", lowered)
    words: set[str] = set()
    # A glue character ends a run, so no bigram holds one; the bigrams are made in C (map).
    for run in _CJK_RUN.findall(lowered.translate(_GLUE_ENDS_RUN)):
        words.update(map(operator.add, run[:-1], run[1:]))
    for word in _WORD.findall(lowered):
        if _DIGITS.isdisjoint(word):  # a word: its stem
            if len(word) >= 3:
                words.add(word[:5])
        elif len(word) - len(word.translate(_NO_DIGITS)) < 5:  # a model; 5 digits: an order
            words.add(word)  # or tracking number ("jd20260301001"), left out
    # The respondent's own name, however it is written in the text ("京东" for "京东自营").
    own = {name[i : i + 2] for i in range(len(name) - 1)} | {w[:5] for w in _WORD.findall(name)}
    return frozenset(words - _BOILER_ZH - _BOILER_EN - own)


def similarity(a: frozenset[str], b: frozenset[str]) -> float:
    """Weighted Jaccard: the weight of the shared words over that of all words of the two. A
    model number (letters and digits: "de8", "x9-pro") weighs as much as _MODEL_WEIGHT words."""
    if not a or not b:
        return 0.0
    shared = _weight(a & b)
    return shared / (_weight(a) + _weight(b) - shared)


_MODEL_WEIGHT = 4


def _weight(words: frozenset[str]) -> int:
    return len(words) + (_MODEL_WEIGHT - 1) * sum(1 for w in words if not _DIGITS.isdisjoint(w))


# -- the recent cases of a respondent ---------------------------------------------------------


@dataclass
class Member:
    """A recent case of the respondent, as grouping sees it."""

    id: int
    number: str
    complainant: str
    gist: str  # extra["gist"]: its words, space-separated
    group: str | None
    rank: int = 0  # its age in the pool: the lower, the older
    bits: int = 0  # its words as bits of its respondent's vocabulary (_Pool.add)
    weight: int = 0

    @property
    def words(self) -> frozenset[str]:
        return frozenset(self.gist.split())


@dataclass
class _Vocabulary:
    """A respondent's words as bits, and its recent cases' bits and weights. Kept in the
    process across batches (an open case's gist never changes), so a batch reads the pool's
    cases from the database but works out the bits only of cases it has not seen."""

    index: dict[str, int] = field(default_factory=dict)  # word -> its bit
    models: int = 0  # the bits of words with a digit (model numbers)
    cases: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # id -> bits, weight,
    # and its gist's length (an erased case's gist changes)

    def bits(self, words: frozenset[str]) -> int:
        bits = 0
        for word in words:
            bit = self.index.get(word)
            if bit is None:
                bit = self.index[word] = 1 << len(self.index)
                if not _DIGITS.isdisjoint(word):
                    self.models |= bit
            bits |= bit
        return bits

    def weigh(self, bits: int) -> int:
        return bits.bit_count() + (_MODEL_WEIGHT - 1) * (bits & self.models).bit_count()


_VOCABULARIES: OrderedDict[str, _Vocabulary] = OrderedDict()
_KEEP = 256  # respondents whose vocabularies are kept, the most recently used
_MAX_CASES = 4 * _POOL  # a vocabulary that knew this many cases starts again (its ints grow)


def _vocabulary(key: str) -> _Vocabulary:
    found = _VOCABULARIES.pop(key, None)
    if found is None or len(found.cases) > _MAX_CASES:
        found = _Vocabulary()
    _VOCABULARIES[key] = found
    while len(_VOCABULARIES) > _KEEP:
        _VOCABULARIES.popitem(last=False)
    return found


@dataclass
class _Pool:
    """A respondent's recent cases: its groups' (each oldest first) and the loose ones (newest
    first). Each word is a bit of the respondent's vocabulary, so the words two cases share
    are one AND of two integers and their weight a bit count; and a new case is compared with
    a group's cases only until one is alike (its oldest alike case decides): in a recall most
    new cases join a group after a comparison or two, not two hundred."""

    now: datetime
    vocabulary: _Vocabulary = field(default_factory=_Vocabulary)
    groups: dict[str, list[Member]] = field(default_factory=dict)
    loose: list[Member] = field(default_factory=list)
    oldest: int = 0  # rank of the oldest member read
    newest: int = 0  # rank of the newest member added

    def add(self, member: Member, *, newest: bool = False) -> None:
        """A member read from the database (newest first), or, newest, a case just opened."""
        vocabulary = self.vocabulary
        known = vocabulary.cases.get(member.id)
        if known is not None and known[2] == len(member.gist):
            member.bits, member.weight, _ = known
        else:  # new to this process, or its gist changed (erased)
            member.bits = vocabulary.bits(member.words)
            member.weight = vocabulary.weigh(member.bits)
            vocabulary.cases[member.id] = (member.bits, member.weight, len(member.gist))
        if newest:
            self.newest += 1
            member.rank = self.newest
        else:
            self.oldest -= 1
            member.rank = self.oldest
        if member.group is not None:
            bisect.insort(self.groups.setdefault(member.group, []), member, key=_rank)
        elif newest:
            self.loose.insert(0, member)
        else:
            self.loose.append(member)

    def join(self, member: Member, group: str) -> None:
        self.loose.remove(member)
        member.group = group
        bisect.insort(self.groups.setdefault(group, []), member, key=_rank)

    def size(self, group: str) -> int:
        return len(self.groups.get(group, ()))

    def match(self, words: frozenset[str], threshold: float) -> tuple[str | None, list[Member]]:
        """The group of the oldest member alike with words (None: none is), and the loose
        members alike with it, newest first. Alike: similarity() reaches threshold."""
        vocabulary = self.vocabulary
        bits = vocabulary.bits(words)
        weight = vocabulary.weigh(bits)

        def alike(member: Member) -> bool:
            common = bits & member.bits
            if not common:
                return False
            shared = vocabulary.weigh(common)
            return shared >= threshold * (weight + member.weight - shared)

        found: Member | None = None
        for members in self.groups.values():
            first = next((m for m in members if alike(m)), None)
            if first is not None and (found is None or first.rank < found.rank):
                found = first
        return (found.group if found else None), [m for m in self.loose if alike(m)]


def _rank(member: Member) -> int:
    return member.rank


def _pool(session: Session, config: Config, key: str, now: datetime) -> _Pool:
    """The latest _POOL cases against `key` within the window, read once per transaction."""
    pools = writes.memo(session, "group-pools")
    pool: _Pool | None = pools.get(key)
    if pool is not None and pool.now == now:
        return pool
    since = now - config.escalation.group_window.as_timedelta()
    pool = _Pool(now, _vocabulary(key))
    for case_id, number, email, words, group in writes.recent_cases(
        session, key, since, now, _POOL
    ):
        pool.add(
            Member(
                id=int(case_id),
                number=str(number),
                complainant=(email or "").strip().lower(),
                gist=words or "",
                group=str(group) if group else None,
            )
        )
    pools[key] = pool
    return pool


# -- the steps ---------------------------------------------------------------------------------


class GroupComplaint:
    name = "group-complaint"
    description = (
        "the case a mail is about to open, alike with cases of other consumers against the "
        "same respondent, joins or forms their group and is urgent"
    )

    def process(self, ctx: Context) -> None:
        prep = ctx.prep
        respondent = prep.fields.get("respondent")
        if ctx.ticket is not None or prep.automatic or not respondent or prep.message is None:
            return
        key = normalise_respondent(str(respondent))
        if not key:
            return
        words = gist(prep.message.subject, prep.words or prep.new_text, str(respondent))
        extra = {**ctx.opening.get("extra", {}), "gist": " ".join(sorted(words)[:_MAX_WORDS])}
        ctx.opening["extra"] = extra
        escalation = ctx.config.escalation
        if escalation.group_threshold == 0 or not words:  # 0: grouping is off
            return
        pool = _pool(ctx.session, ctx.config, key, ctx.now)
        group_id, alike = pool.match(words, escalation.group_similarity)
        me = prep.message.from_address.strip().lower()
        if group_id is not None:  # the oldest alike case's group; the loose alike ones join
            joining = alike
        elif len({m.complainant for m in alike} | {me}) >= max(escalation.group_threshold, 2):
            group_id, joining = alike[-1].number, alike
        else:
            return
        size = pool.size(group_id) + len(joining) + 1
        for member in joining:
            pool.join(member, group_id)
            _join(ctx, member, group_id, size)
        ctx.opening["priority"] = "urgent"
        ctx.opening["extra"] = {**extra, "group": {"id": group_id, "size": size}}
        prep.notes.append(f"group complaint: joins group {group_id} ({size} cases)")


_MAX_WORDS = 120  # of a gist kept on the case


def _join(ctx: Context, member: Member, group_id: str, size: int) -> None:
    """An earlier case found to be of the group as it forms: urgent, marked, noted."""
    ticket = ctx.session.get(Ticket, member.id)
    if ticket is None:
        return
    if ticket.priority != "urgent":
        ticket.priority = "urgent"
        sla.on_priority_change(ticket, ctx.services, ctx.now)
    ticket.extra = {**ticket.extra, "group": {"id": group_id, "size": size}}
    ticket.updated_at = ctx.now
    ctx.session.add(
        TimelineEntry(
            ticket_id=ticket.id,
            at=ctx.now,
            kind="note",
            actor="caseloop",
            internal=True,
            text=f"group complaint {group_id}: alike complaints of {size} cases; urgent",
            data={"group": group_id},
        )
    )


class GroupAlert:
    name = "group-alert"
    description = "a new case joins its respondent's recent cases; a group's supervisors hear of it"

    def process(self, ctx: Context) -> None:
        ticket = ctx.ticket
        if not ctx.new_ticket or ticket is None or not ticket.respondent_key:
            return
        extra = ticket.extra or {}
        group = extra.get("group")
        pools = writes.memo(ctx.session, "group-pools")
        pool: _Pool | None = pools.get(ticket.respondent_key)
        if pool is not None and pool.now == ctx.now:
            pool.add(
                Member(
                    id=ticket.id,
                    number=ticket.number,
                    complainant=ticket.complainant_email.strip().lower(),
                    gist=str(extra.get("gist") or ""),
                    group=str(group["id"]) if isinstance(group, dict) else None,
                ),
                newest=True,
            )
        if isinstance(group, dict) and not ctx.prep.backfill and _recipients(ctx.config):
            alert_group(ctx, attach(ctx.session, ticket), str(group["id"]), int(group["size"]))


def _recipients(config: Config) -> list[str]:
    """urgent_notify and the supervisors, each once."""
    escalation = config.escalation
    return list(
        dict.fromkeys(a.lower() for a in (*escalation.urgent_notify, *escalation.supervisors))
    )


def alert_group(ctx: Context, ticket: Ticket, group_id: str, size: int) -> int:
    """Mail urgent_notify and the supervisors about the group, once a day each."""
    config = ctx.config
    recipients = _recipients(config)
    if not recipients:
        return 0
    day = ctx.now.astimezone(config.timezone).date().isoformat()
    case = CaseSummary.of(ctx.session, config, ticket)
    mail: dict[str, Any] = {
        "kind": "group",
        "now": ctx.now,
        "automatic": "auto-generated",
        "internal": True,
    }
    sent = 0
    for address in recipients:
        about = {"group": group_id, "size": size, **case.context(config.language_of(address))}
        intent = f"group:{group_id}:{day}:{address}"
        queued = queue_mail(
            ctx.session, config, ctx.templates, ticket=ticket, intent=intent, recipient=address,
            context=about, **mail,
        )  # fmt: skip
        sent += queued is not None
    return sent
