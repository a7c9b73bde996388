# ruff: noqa: E501  (the complaints below are real-length lines of text, kept whole)
"""Group complaints (群体性投诉): one incident of one respondent, many consumers; not a busy shop."""

from __future__ import annotations

from datetime import timedelta
from email.message import EmailMessage
from email.utils import make_msgid

from sqlalchemy import select

from daemon.app import App
from daemon.clock import MovableClock
from daemon.maildirs import deliver_to_maildir
from daemon.store.models import OutboxMessage, Ticket
from daemon.views import ticket_json, ticket_text
from handlers.group import gist, similarity
from handlers.register import normalise_respondent

CONFIG = """
[escalation]
supervisors = ["lead@example.com"]
"""

# fmt: off
RETAILER = [
    ("电饭煲不加热", "我在京东自营买的美的电饭煲，用了三天就不能加热了，订单号 JD20260301001，要求退货。\n张伟 13800138001"),
    ("手机屏幕绿线", "在京东自营下单的华为手机，收到后屏幕有一条绿线，联系客服说要寄回检测，一直拖着不处理。\n王芳"),
    ("羽绒服掉色", "被投诉方：京东自营\n购买的儿童羽绒服洗了一次就严重掉色，染到了其他衣服上，金额 459 元。\n李娜"),
    ("空气净化器噪音大", "在京东自营买的空气净化器，噪音特别大，晚上根本没法开，申请退货被拒。\n刘洋 13912345678"),
    ("包裹丢失", "在京东自营买的罗技键盘，配送员把快递放在小区门口就走了，包裹丢失，订单号 JD20260303117。\n陈静"),
    ("怀疑买到假酒", "在京东自营购买的茅台酒，瓶盖防伪码查询显示已被查询过多次，怀疑是假货，要求鉴定并赔偿。\n杨勇"),
    ("扫地机器人故障", "在京东自营买的小米扫地机器人，充电座充不上电，换了两次还是一样，要求退款。\n赵磊"),
    ("安装乱收费", "我在京东自营买的海尔热水器，安装师傅收了200元材料费，商品页面写的是免费安装。\n黄敏"),
    ("奶粉日期不一致", "从京东自营买的进口奶粉，罐底生产日期和外包装上的不一致，不敢给孩子喝。\n周杰"),
    ("会员自动续费", "我在京东自营买的PLUS会员自动续费扣了148元，我从来没有开通过自动续费，要求退还。\n吴霞"),
    ("跑鞋开胶", "在京东自营买的耐克跑鞋，穿了一周鞋底就开胶了，客服说是人为损坏。\n徐涛"),
    ("价保被拒", "在京东自营买的电视，降价后申请价保被拒绝，差价300元，页面明明写着支持价保。\n孙丽"),
    ("笔记本送修一个月", "在京东自营购买的戴尔笔记本电脑，键盘有几个键失灵，送修一个月还没修好。\n马超"),
    ("冰箱外壳凹痕", "被投诉方：京东自营\n订购的冰箱送到时外壳有明显凹痕，送货员让我先签收再说，现在不给换。\n朱琳"),
    ("Cracked toothbrush", "Shop: 京东自营\nI ordered a Philips electric toothbrush, order JD20260302009. It arrived with a cracked handle and customer service keeps asking for more photos.\nTom Baker"),
    ("Buzzing headphones", "Shop: 京东自营\nThe Sony headphones I bought have a loud buzzing in the left ear cup. The return request was rejected as not a quality problem.\nAnna Schmidt"),
    ("Charged twice", "Shop: 京东自营\nI was charged twice for the same order of coffee beans (89 yuan each). Only one parcel came and there is no refund yet.\nDavid Lee"),
    ("Late delivery", "Shop: 京东自营\nMy Lenovo tablet was delivered five days after the promised date, and the express delivery fee was not refunded.\nMaria Garcia"),
    ("Wrong colour jacket", "Shop: 京东自营\nThe winter jacket I bought is a different colour from the product photo and the size label is wrong.\nJames Wilson"),
    ("Price protection refused", "Shop: 京东自营\nThe price of the Dyson vacuum dropped by 500 yuan two days after I bought it, and price protection was refused.\nLinda Chen"),
]
EBIKE = [
    ("电动车电池充不满", "我在雅迪电动车城南专卖店买的冠能DE8电动车，才骑了一个半月，电池就充不满电了，充满显示100%骑5公里就没电。要求更换电池。\n郑强 13700001111"),
    ("DE8续航掉得厉害", "被投诉方：雅迪电动车城南专卖店\n三月份买的DE8，最近电池续航突然从60公里掉到不到10公里，店里说是我充电方式不对，不给换电池。\n钱芳"),
    ("电池鼓包", "在雅迪电动车城南专卖店买的冠能DE8，电池用了两个月就鼓包了，充电的时候充电器一直跳灯，充不进电。\n冯军"),
    ("新车电池不行", "我家在雅迪电动车城南专卖店买的DE8，电池不行了，充一晚上电只能骑几公里，店里推说要寄厂家检测。\n韩梅"),
    ("电动自行车续航缩水", "从雅迪电动车城南专卖店购买的DE8电动自行车，电池续航严重缩水，新车骑不到8公里就没电了，去店里检测说电池没问题。\n曹宇"),
    ("冠能DE8电池故障", "投诉对象：雅迪电动车城南专卖店\n四月初买的冠能DE8，骑了四十多天电池充满电也就跑七八公里，店家只肯换充电器不肯换电池。\n彭丽"),
]
LATE = ("DE8电池质量问题", "在雅迪电动车城南专卖店买的冠能DE8电池有质量问题，车买了50天电池就充不满，续航只剩几公里，要求换新电池。\n蒋涛")


# fmt: on


def drop(app: App, n: int, subject: str, body: str) -> None:
    msg = EmailMessage()
    sender = f"consumer{n}@example.net"
    msg["From"], msg["To"], msg["Subject"] = sender, "support@example.com", subject
    msg["Message-ID"] = make_msgid(domain="example.net")
    msg.set_content(body)
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    deliver_to_maildir(inbox, msg.as_bytes())


_ALERTS = ("urgent", "group")


def cases(app: App) -> list[Ticket]:
    with app.sessions() as session:
        found = list(session.scalars(select(Ticket).order_by(Ticket.id)))
        session.expunge_all()
    return found


def supervisor_mail(app: App) -> list[OutboxMessage]:
    """Alerts to the supervisor (not the daily digest, nor an overdue case's escalation)."""
    with app.sessions() as session:
        rows = session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.recipient == "lead@example.com", OutboxMessage.kind.in_(_ALERTS))
            .order_by(OutboxMessage.id)
        ).all()
        session.expunge_all()
    return list(rows)


def test_respondents_compare_in_normalised_form() -> None:
    assert normalise_respondent(" 恒盛地产有限公司 ") == normalise_respondent("恒盛地产公司")
    assert normalise_respondent("ＡＣＭＥ Store Inc.") == normalise_respondent("acme")
    assert normalise_respondent("美的官方旗舰店") == normalise_respondent("美的")
    assert normalise_respondent("小米之家") != normalise_respondent("小米")


def test_a_gist_leaves_out_the_respondent_numbers_and_boilerplate() -> None:
    words = gist(
        "电池投诉",
        "您好，我在雅迪城南店买的DE8（订单号 JD20260301001，金额 2999.00 元，2026-03-02），"
        "电池鼓包。电话 13800138000，yadea@example.cn",
        "雅迪城南店",
    )
    assert {"de8", "电池", "鼓包"} <= words
    assert not {"雅迪", "城南", "投诉", "您好", "订单"} & words
    assert not any(any(c.isdigit() for c in w) and w != "de8" for w in words)
    # The same fault told twice is alike; the shop's other business is not.
    other = gist("发票", "在雅迪城南店买的头盔，一直不给开发票。", "雅迪城南店")
    assert similarity(words, gist("DE8电池", "DE8的电池鼓包了", "雅迪城南店")) > 0.3
    assert similarity(words, other) == 0


def test_unrelated_complaints_against_one_retailer_are_never_a_group(make_app) -> None:
    app: App = make_app(CONFIG)
    for n, (subject, body) in enumerate(RETAILER):
        drop(app, n, subject, body)
        if n % 7 == 6:  # some in one batch, some in the next
            app.run_once()
    app.run_once()

    found = cases(app)
    assert len(found) == 20
    assert {c.respondent_key for c in found} == {normalise_respondent("京东自营")}
    assert [c.number for c in found if c.priority == "urgent" or "group" in c.extra] == []
    assert [m.kind for m in supervisor_mail(app)] == []


def test_one_battery_fault_of_one_model_is_one_group_and_one_mail_a_day(
    make_app, clock: MovableClock
) -> None:
    app: App = make_app(CONFIG)
    for n, (subject, body) in enumerate(RETAILER[:8]):  # the shop's neighbour's traffic
        drop(app, 100 + n, subject, body)
    for n, (subject, body) in enumerate(EBIKE):
        drop(app, n, subject, body)
        app.run_once()
        clock.move(timedelta(hours=2))

    found = [c for c in cases(app) if c.respondent == "雅迪电动车城南专卖店"]
    assert len(found) == 6
    first = found[0].number
    assert [c.priority for c in found] == ["urgent"] * 6
    assert [c.extra["group"]["id"] for c in found] == [first] * 6
    assert found[-1].extra["group"]["size"] == 6
    assert all(c.priority == "normal" for c in cases(app) if c.respondent == "京东自营")
    mails = supervisor_mail(app)
    assert [m.kind for m in mails] == ["group"]  # one alert, no urgent mail per case
    assert mails[0].intent.startswith(f"group:{first}:")

    # The next day a seventh consumer with the same fault joins; one update that day at most.
    clock.move(timedelta(days=1))
    drop(app, 6, *LATE)
    app.run_once()
    drop(
        app,
        7,
        "DE8电池又坏了",
        "我也是在雅迪电动车城南专卖店买的冠能DE8，电池充不满，续航只剩几公里。",
    )
    app.run_once()

    found = [c for c in cases(app) if c.respondent == "雅迪电动车城南专卖店"]
    assert [c.extra["group"]["id"] for c in found] == [first] * 8
    assert [c.priority for c in found] == ["urgent"] * 8
    assert found[6].extra["group"]["size"] == 7
    assert [m.kind for m in supervisor_mail(app)] == ["group", "group"]
    with app.sessions() as session:  # `caseloop tickets show` shows the group
        case = session.get(Ticket, found[6].id)
        assert case is not None
        assert f"group complaint: {first} (7 cases" in ticket_text(case, app.config.timezone)
        assert ticket_json(case, app.config.timezone, timeline=False)["group"]["id"] == first


def test_the_fast_comparison_finds_exactly_the_cases_similarity_finds() -> None:
    import json
    import random
    from datetime import UTC, datetime
    from pathlib import Path

    from handlers.group import Member, _Pool

    lines = (Path(__file__).parent / "data" / "real" / "dev.jsonl").read_text("utf-8")
    texts = [json.loads(line)["text"] for line in lines.splitlines() if line.strip()]
    rng = random.Random(3)
    gists = [gist("", t, None) for t in texts]
    gists += [frozenset(rng.sample(["de8", "x9-pro", "电池", "鼓包", "brake", "abs"], 3))] * 5
    pool = _Pool(datetime.now(UTC))
    # Read newest first, as the database gives them: some already in groups.
    groups = ["g1", None, "g2", None, None]
    for i, g in enumerate(gists):
        pool.add(Member(i, str(i), f"c{i}", " ".join(sorted(g)), groups[i % len(groups)]))
    members = sorted(
        (m for ms in [pool.loose, *pool.groups.values()] for m in ms), key=lambda m: m.id
    )
    for threshold in (0.05, 0.08, 0.2):
        for words in gists[:40] + gists[-5:] + [gist("", "全新的词语 x7 brandnew", None)]:
            alike = [m for m in members if similarity(words, m.words) >= threshold]  # newest first
            grouped = [m for m in alike if m.group is not None]
            expect = (
                grouped[-1].group if grouped else None,
                [m.id for m in alike if m.group is None],
            )
            group, loose = pool.match(words, threshold)
            assert (group, [m.id for m in loose]) == expect
