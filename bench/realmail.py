"""A GENERATED corpus of real-shaped complaint mails for the benches (not real mail).

    .venv/bin/python bench/realmail.py [-n 2000] [--seed 7] [--write DIR] [--check]

make_real_message(i, rng, now) builds one complaint as a mail client would send it: zh-CN (70 %)
or English, several paragraphs (greeting, the purchase, what went wrong, what customer service
said, the demand, the evidence, a closing and a signature), each paragraph drawn from a few
wordings, and every registration detail handlers/register.py looks for: the complainant's name
(From display name and a signature or "姓名：" line), a phone, the business (labelled or in a
phrase), the product, an order number, the amount, the purchase date and the demand. Most mails
name one of a few shops, weighted so that a handful draw most complaints: group complaints
(handlers/group.py, 5 complainants in 7 days) form early in a run.

As real clients send them: Chinese bodies in UTF-8 (base64 or quoted-printable), GBK labelled
"gbk" or "gb2312" (Outlook and Foxmail label GBK text GB2312), or GB18030; RFC 2047 subjects and
display names; half multipart/alternative with an HTML part; Received, DKIM-Signature and
X-Mailer headers; a tenth with a photo or PDF attachment of a few tens of kB; a fifth with a
quoted chat with the shop's customer service under the complaint.

Deterministic: the same (seed, i, now) gives the same bytes. `now` dates the mail and its
purchase (a few days to weeks before), so acknowledgements are due. --check parses N mails and
prints how many give each registration field to the extractor.
"""

from __future__ import annotations

import argparse
import base64
import quopri
import random
import sys
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

# -- who, what, where --------------------------------------------------------------------------

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩冯邓曹彭曾萧田"
SURNAMES += "董潘袁蔡蒋余于杜叶程魏苏吕丁任沈姚卢"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏辉"
GIVEN += "建国文斌宇浩凯晨欣怡雪梅琳思博"
PINYIN = ["wang", "li", "zhang", "liu", "chen", "yang", "huang", "zhao", "wu", "zhou", "xu", "sun"]
EN_FIRST = ["Emily", "James", "Olivia", "Daniel", "Sophie", "Michael", "Grace", "Thomas", "Hannah"]
EN_FIRST += ["David", "Laura", "Peter", "Rachel", "Kevin", "Anna", "Mark", "Chloe", "Ryan"]
EN_LAST = ["Carter", "Nguyen", "Smith", "Brown", "Wilson", "Taylor", "Lee", "Walker", "Harris"]
EN_LAST += ["Clark", "Lewis", "Young", "Hall", "Allen", "King", "Wright", "Scott", "Green"]
DOMAINS = ["qq.com", "163.com", "126.com", "sina.com", "foxmail.com", "139.com", "outlook.com"]
EN_DOMAINS = ["gmail.example", "outlook.example", "yahoo.example", "icloud.example"]

# (name, weight): a few shops draw most complaints, as in a recall or a shop gone bad.
ZH_SHOPS = [
    ("鑫达家电官方旗舰店", 30),
    ("优品生活馆", 18),
    ("快捷通物流有限公司", 12),
    ("美味轩餐饮有限公司", 8),
    ("星辰数码专营店", 6),
    ("云购商城", 4),
    ("安心教育培训中心", 3),
    ("绿源生鲜超市", 2),
    ("悦动健身俱乐部", 2),
    ("华美装饰工程有限公司", 1),
]
EN_SHOPS = [
    ("BrightHome Appliances Ltd", 30),
    ("QuickShip Online Store", 15),
    ("Urban Threads Co", 8),
    ("Golden Wok Restaurant", 5),
    ("NovaTech Electronics", 4),
    ("Sunrise Travel Agency", 2),
]
ZH_PRODUCTS = [
    ("电饭煲", "加热", "内胆涂层脱落"),
    ("扫地机器人", "充电", "主板烧坏，有焦糊味"),
    ("空气净化器", "开机", "滤网是旧的，有使用痕迹"),
    ("羽绒服", "穿着", "大量跑绒，含绒量明显不足"),
    ("蓝牙耳机", "连接", "左耳没有声音"),
    ("电动牙刷", "充电", "充不进电"),
    ("婴儿奶粉", "食用", "罐内有结块和异味"),
    ("笔记本电脑", "使用", "屏幕出现多条竖线"),
    ("智能手表", "佩戴", "表带断裂，屏幕进水"),
    ("破壁料理机", "打浆", "电机异响并冒烟"),
]
EN_PRODUCTS = [
    ("rice cooker", "the inner pot coating peels off into the food"),
    ("robot vacuum", "the charging dock smells of burnt plastic and the vacuum will not charge"),
    ("winter coat", "the seams split and the down leaks everywhere"),
    ("pair of wireless earbuds", "the left earbud has no sound at all"),
    ("laptop", "the screen shows vertical lines and flickers"),
    ("air purifier", "the filter inside was clearly used, with dust on it"),
    ("smart watch", "water got behind the screen although it is sold as waterproof"),
]

# -- zh-CN wordings ----------------------------------------------------------------------------

ZH_GREETING = ["您好：", "消协的工作人员您好！", "尊敬的客服：", "你好，", "领导您好："]
ZH_PURCHASE = [
    "我于{date_zh}在{shop}购买了一台{product}，订单号：{order}，实付金额{amount}元。",
    "本人{date_zh}在网店「{shop}」下单购买{product}一件，订单编号 {order}，支付了￥{amount}。",
    "商家名称：{shop}\n购买时间：{date_iso}\n订单号：{order}\n金额：{amount}元\n商品：{product}",
    "被投诉方：{shop}\n{date_zh}我在该店买的{product}（订单号{order}，￥{amount}），"
    "收到时包装完好。",
    "{date_zh}，我在{shop}下单购买了{product}，订单号为 {order}，花了{amount}元。",
]
ZH_PROBLEM = [
    "收到后第一次{use}就发现问题：{fault}。我严格按照说明书操作，没有任何人为损坏。",
    "使用不到一周，{product}就出现{fault}的情况，严重影响正常使用，而且存在安全隐患。",
    "刚开始还好，第三天{use}的时候突然{fault}，当时家里老人孩子都在，吓了一跳。",
    "商品与页面宣传严重不符，页面写着“正品保证、假一赔十”，实际收到的{product}{fault}。",
    "这已经是第二次出现同样的问题了，上次换货之后没过多久又{fault}。",
]
ZH_SERVICE = [
    "我多次联系在线客服，对方一直说“已经反馈给相关部门，请耐心等待”，至今没有任何结果。",
    "打了三次客服电话，每次都让我等回电，结果谁也没有回电话，态度非常敷衍。",
    "客服先是答应七天无理由退货，后来又说商品已经拆封不能退，前后说法不一致。",
    "商家客服让我自己寄到厂家检测，运费自理，检测要一个月，我认为这是在推卸责任。",
    "我在平台上申请了售后，商家直接拒绝，理由是“人为损坏”，但没有提供任何检测报告。",
]
ZH_DEMAND = [
    "我要求商家退货退款，并承担来回运费。",
    "现要求全额退款{amount}元，并赔偿我的损失。",
    "希望贵会督促商家尽快给我更换新品，并给出书面道歉。",
    "我的诉求：\n1. 要求退货退款；\n2. 要求按照消费者权益保护法给予三倍赔偿。",
    "请求协助处理，要求商家免费维修或者换货。",
]
ZH_EVIDENCE = [
    "订单截图、付款记录和商品照片我都保留着，如有需要可以提供。",
    "附件是商品照片和聊天记录截图，请查收。",
    "我有完整的聊天记录和视频，可以随时补充。",
    "发票和快递单号都在，需要的话我再发过来。",
]
ZH_CLOSING = ["盼复，谢谢！", "麻烦尽快处理，谢谢。", "此致\n敬礼", "谢谢！"]
ZH_SIGNATURE = [
    "{name}\n联系电话：{phone}",
    "投诉人：{name}\n手机：{phone}",
    "姓名：{name}\n电话 {phone}\n{date_sent}",
    "{name}\n{phone}",
]
ZH_SUBJECTS = [
    "投诉：{shop}的{product}质量问题，要求退款",
    "关于在{shop}购买{product}的投诉",
    "{product}有严重质量问题，商家拒绝处理",
    "投诉{shop}（订单{order}）",
    "请求帮助：{product}售后无人处理",
]
ZH_CHAT = [
    "{shop}客服：亲，您好，请问有什么可以帮您？",
    "我：我买的{product}坏了，要求退货。",
    "{shop}客服：亲，这边帮您登记一下，请您耐心等待处理结果哦。",
    "我：已经等了一个星期了，到底什么时候处理？",
    "{shop}客服：亲，这边已经加急了，请您再等等。",
]

# -- English wordings --------------------------------------------------------------------------

EN_GREETING = ["Hello,", "Dear Sir or Madam,", "To whom it may concern,", "Hi,"]
EN_PURCHASE = [
    "On {date_en} I bought a {product} from {shop} (order no. {order}) and paid RMB {amount}.",
    "Respondent: {shop}\nOrder number: {order}\nPurchase date: {date_iso}\nAmount paid: "
    "RMB {amount}\nProduct: {product}",
    "My complaint is against {shop}. I purchased a {product} from them on {date_en}, "
    "order #{order}, for {amount} yuan.",
    "I ordered a {product} from {shop} on {date_en} (order ID {order}); it cost me CNY {amount}.",
]
EN_PROBLEM = [
    "Within a week of delivery, {fault}. I followed the manual exactly and nothing was dropped "
    "or misused.",
    "From the first day {fault}. This is not a cosmetic issue: I no longer feel safe using it "
    "at home with my children around.",
    "The listing promised a brand-new product with a two-year warranty, but {fault}.",
    "It worked for three days and then {fault}. A friend who bought the same model at the "
    "same time has exactly the same problem.",
]
EN_SERVICE = [
    "I contacted customer service four times by chat and twice by phone. Each time I was told "
    "that my case had been escalated, and each time nobody came back to me.",
    "The shop first agreed to a return, then refused it because the box had been opened, "
    "which is the only way to find out that the product is faulty.",
    "Their support asked me to ship it to the manufacturer at my own cost and wait a month "
    "for an inspection. I do not think that is reasonable.",
]
EN_DEMAND = [
    "I request a full refund of RMB {amount} and that the shop collects the item at its cost.",
    "I would like a replacement unit, or a refund if no replacement is available.",
    "Please help me get a refund and an apology from the shop.",
    "I want the shop to repair it free of charge within two weeks, or refund me in full.",
]
EN_EVIDENCE = [
    "I have kept the receipt, the chat history and photos of the damage.",
    "Photos and the invoice are attached.",
    "I can send the order confirmation, the payment record and a video of the fault.",
]
EN_CLOSING = ["Kind regards,", "Best regards,", "Thank you,", "Sincerely,", "Regards,"]
EN_SIGNATURE = ["{name}\nPhone: {phone}", "{name}\nMobile: +86 {phone_spaced}", "{name}\n{phone}"]
EN_SUBJECTS = [
    "Complaint about {shop}: faulty {product}, refund refused",
    "Order {order} - faulty {product}",
    "Complaint against {shop}",
    "Defective {product} and no answer from customer service",
]

ZH = {
    "greeting": ZH_GREETING,
    "purchase": ZH_PURCHASE,
    "problem": ZH_PROBLEM,
    "service": ZH_SERVICE,
    "demand": ZH_DEMAND,
    "evidence": ZH_EVIDENCE,
    "closing": ZH_CLOSING,
    "signature": ZH_SIGNATURE,
    "subject": ZH_SUBJECTS,
}
EN = {
    "greeting": EN_GREETING,
    "purchase": EN_PURCHASE,
    "problem": EN_PROBLEM,
    "service": EN_SERVICE,
    "demand": EN_DEMAND,
    "evidence": EN_EVIDENCE,
    "closing": EN_CLOSING,
    "signature": EN_SIGNATURE,
    "subject": EN_SUBJECTS,
}

MAILERS = [
    "Foxmail 7.2.25.228[cn]",
    "QQMail 2.x",
    "Microsoft Outlook 16.0",
    "Coremail Webmail Server Version XT5.0.14",
    "Apple Mail (2.3731.700.6)",
    None,
]


def _pick(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rng.choices([n for n, _ in weighted], [w for _, w in weighted])[0]


def _b64_lines(data: bytes) -> str:
    return base64.encodebytes(data).decode("ascii").replace("\n", "\r\n").rstrip("\r\n")


def _encoded_word(text: str, charset: str) -> str:
    """A header value as clients write it: RFC 2047 base64 words, ASCII left as is."""
    if text.isascii():
        return text
    data = text.encode(charset)
    words, start = [], 0
    while start < len(data):  # 45 bytes per word, never splitting a character
        end = min(start + 45, len(data))
        while end < len(data):
            try:
                data[start:end].decode(charset)
                break
            except UnicodeDecodeError:
                end -= 1
        words.append(f"=?{charset}?B?{base64.b64encode(data[start:end]).decode()}?=")
        start = end
    return "\r\n ".join(words)


def _html(text: str) -> str:
    from html import escape

    paragraphs = "".join(
        f"<p>{escape(p).replace(chr(10), '<br>')}</p>" for p in text.split("\n\n") if p
    )
    return (
        '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
        f'</head><body><div style="font-family: Microsoft YaHei, Arial">{paragraphs}'
        "</div></body></html>"
    )


def _attachment(rng: random.Random, zh: bool) -> tuple[str, str, bytes]:
    """(filename, content type, bytes) of a photo or an invoice: random bytes, real headers."""
    if rng.random() < 0.7:
        name = f"{'商品照片' if zh else 'photo'}_{rng.randrange(1, 9)}.jpg"
        size = rng.randrange(20_000, 60_000)
        return name, "image/jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF" + rng.randbytes(size)
    name = "发票.pdf" if zh else "invoice.pdf"
    return name, "application/pdf", b"%PDF-1.4\n" + rng.randbytes(rng.randrange(8_000, 30_000))


def _body_part(text: str, zh: bool, rng: random.Random) -> tuple[str, bytes]:
    """(charset label as sent, the text/plain part with its headers) in a client's charset."""
    r = rng.random()
    if zh and r < 0.15:
        label, data, cte = "gb2312", text.encode("gbk"), "base64"  # GBK bytes labelled GB2312
    elif zh and r < 0.25:
        label, data, cte = "gbk", text.encode("gbk"), "base64"
    elif zh and r < 0.32:
        label, data, cte = "gb18030", text.encode("gb18030"), "base64"
    elif zh and r < 0.5:
        label, data, cte = "utf-8", text.encode("utf-8"), "quoted-printable"
    elif zh:
        label, data, cte = "utf-8", text.encode("utf-8"), "base64"
    elif r < 0.5:
        label, data, cte = "us-ascii", text.encode("ascii", "replace"), "7bit"
    else:
        label, data, cte = "utf-8", text.encode("utf-8"), "quoted-printable"
    crlf = data.replace(b"\n", b"\r\n")
    if cte == "base64":
        payload = _b64_lines(crlf)
    elif cte == "quoted-printable":
        payload = quopri.encodestring(crlf).decode("ascii").replace("\r\n", "\n")
        payload = payload.replace("\n", "\r\n")
    else:
        payload = crlf.decode("ascii")
    head = f'Content-Type: text/plain; charset="{label}"\r\nContent-Transfer-Encoding: {cte}'
    return label, f"{head}\r\n\r\n{payload}".encode("ascii")


def _phone(rng: random.Random) -> tuple[str, str]:
    digits = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
    style = rng.random()
    shown = (
        digits
        if style < 0.5
        else f"{digits[:3]}-{digits[3:7]}-{digits[7:]}"
        if style < 0.8
        else f"{digits[:3]} {digits[3:7]} {digits[7:]}"
    )
    return shown, f"{digits[:3]} {digits[3:7]} {digits[7:]}"


def make_real_message(
    i: int, rng: random.Random, now: datetime, html: float = 0.5, attachments: float = 0.1
) -> bytes:
    """One generated, real-shaped complaint mail (see the module docstring); `html` and
    `attachments` are the shares of mails with an HTML alternative and with an attachment."""
    zh = rng.random() < 0.7
    sent = now - timedelta(minutes=rng.randrange(5, 600))
    bought = sent - timedelta(days=rng.randrange(3, 40))
    phone, phone_spaced = _phone(rng)
    order = rng.choice(["JD", "TB", "DD", "SN", ""]) + f"{bought:%Y%m%d}{rng.randrange(10**6):06d}"
    amount = f"{rng.randrange(39, 6999)}.{rng.choice(['00', '00', '90', '50', '99'])}"
    if zh:
        name = rng.choice(SURNAMES) + "".join(rng.choices(GIVEN, k=rng.choice((1, 2))))
        shop = _pick(rng, ZH_SHOPS)
        product, use, fault = rng.choice(ZH_PRODUCTS)
        local = f"{rng.choice(PINYIN)}{i}" if rng.random() < 0.6 else str(10_000_000 + i * 7)
        address = f"{local}@{rng.choice(DOMAINS)}"
    else:
        name = f"{rng.choice(EN_FIRST)} {rng.choice(EN_LAST)}"
        shop = _pick(rng, EN_SHOPS)
        product, fault = rng.choice(EN_PRODUCTS)
        use = ""
        address = f"{name.split()[0].lower()}.{i}@{rng.choice(EN_DOMAINS)}"
    words = {
        "name": name,
        "shop": shop,
        "product": product,
        "use": use,
        "fault": fault,
        "order": order,
        "amount": amount,
        "phone": phone,
        "phone_spaced": phone_spaced,
        "date_zh": f"{bought.year}年{bought.month}月{bought.day}日",
        "date_iso": f"{bought:%Y-%m-%d}",
        "date_en": f"{bought.day} {bought:%B %Y}",
        "date_sent": f"{sent:%Y-%m-%d}",
    }

    def para(options: list[str]) -> str:
        return rng.choice(options).format(**words)

    wording = ZH if zh else EN
    paragraphs = [
        para(wording["greeting"]),
        para(wording["purchase"]),
        " ".join(para(wording["problem"]) for _ in range(rng.randrange(1, 3))),
        para(wording["service"]),
        para(wording["demand"]),
        para(wording["evidence"]),
        para(wording["closing"]) + "\n" + para(wording["signature"]),
    ]
    subject = para(wording["subject"])
    text = "\n\n".join(paragraphs) + "\n"
    if zh and rng.random() < 0.2:  # the chat with the shop, pasted under the complaint
        chat = "\n".join(line.format(**words) for line in ZH_CHAT)
        text += f"\n------------------ 原始邮件 ------------------\n{chat}\n"

    label, plain = _body_part(text, zh, rng)
    header_charset = label if label in ("gb2312", "gbk", "gb18030") else "utf-8"
    if header_charset == "gb2312":
        header_charset = "gbk"  # GB2312 cannot hold every name; clients then say GBK
    host = address.partition("@")[2]
    stamp = format_datetime(sent.astimezone(UTC))
    headers = [
        f"Return-Path: <{address}>",
        f"Received: from mx{rng.randrange(1, 9)}.{host} (unknown [{rng.randrange(1, 223)}."
        f"{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}])\r\n\tby mail."
        f"example.com (Postfix) with ESMTPS id {rng.randbytes(5).hex().upper()}\r\n\tfor "
        f"<support@example.com>; {stamp}",
        f"Received: from [{rng.randrange(10, 192)}.{rng.randrange(256)}.{rng.randrange(256)}."
        f"{rng.randrange(1, 255)}] by smtp.{host} with ESMTPA; {stamp}",
    ]
    if rng.random() < 0.4:
        signature = base64.b64encode(rng.randbytes(128)).decode()
        headers.append(
            f"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d={host}; s=s201512;\r\n\t"
            f"t={int(sent.timestamp())}; bh={base64.b64encode(rng.randbytes(32)).decode()};\r\n\t"
            "h=From:To:Subject:Date:Message-ID:MIME-Version:Content-Type;\r\n\t"
            f"b={signature[:64]}\r\n\t {signature[64:]}"
        )
    headers += [
        f'From: "{_encoded_word(name, header_charset)}" <{address}>',
        "To: support@example.com",
        f"Subject: {_encoded_word(subject, header_charset)}",
        f"Date: {format_datetime(sent)}",
        f"Message-ID: <{rng.randbytes(8).hex()}.{i}@{host}>",
    ]
    mailer = rng.choice(MAILERS)
    if mailer:
        headers.append(f"X-Mailer: {mailer}")
    headers.append("MIME-Version: 1.0")

    parts: list[bytes] = [plain]
    if rng.random() < html:  # the client sends an HTML alternative too
        html = _html(text).encode("utf-8")
        alt = (
            b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: base64\r\n\r\n'
            + _b64_lines(html).encode("ascii")
        )
        parts = [_multipart("alternative", [plain, alt], rng)]
    if rng.random() < attachments:
        filename, ctype, data = _attachment(rng, zh)
        encoded = _encoded_word(filename, "utf-8")
        parts.append(
            f'Content-Type: {ctype}; name="{encoded}"\r\nContent-Transfer-Encoding: base64\r\n'
            f'Content-Disposition: attachment; filename="{encoded}"\r\n\r\n'.encode()
            + _b64_lines(data).encode("ascii")
        )
    body = parts[0] if len(parts) == 1 else _multipart("mixed", parts, rng)
    return "\r\n".join(headers).encode("ascii") + b"\r\n" + body + b"\r\n"


def _multipart(subtype: str, parts: list[bytes], rng: random.Random) -> bytes:
    boundary = f"----=_Part_{rng.randrange(10**6)}_{rng.randbytes(6).hex()}"
    out = [f'Content-Type: multipart/{subtype};\r\n\tboundary="{boundary}"\r\n'.encode()]
    for part in parts:
        out.append(f"--{boundary}\r\n".encode() + part + b"\r\n")
    out.append(f"--{boundary}--".encode())
    return b"\r\n".join(out)


def corpus(
    n: int,
    seed: int = 7,
    now: datetime | None = None,
    html: float = 0.5,
    attachments: float = 0.1,
) -> list[bytes]:
    """N generated real-shaped complaint mails."""
    rng = random.Random(seed)
    at = now or datetime.now(UTC).replace(microsecond=0)
    return [make_real_message(i, rng, at, html, attachments) for i in range(n)]


def _check(mails: list[bytes]) -> None:
    """How many mails give each registration field to the extractor, and their sizes."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from collections import Counter

    from daemon.config import load
    from daemon.items import Incoming
    from handlers.pipeline import prepare

    class NoBlobs:
        def put(self, data: bytes) -> str:
            return "0" * 64

    config = load(None)
    found: Counter[str] = Counter()
    for k, raw in enumerate(mails):
        prep = prepare(Incoming("bench", f"m{k}", raw, f"m{k}"), config, NoBlobs())
        found.update(list(prep.fields))
        found.update(f"missing {m}" for m in prep.missing)
        found.update(["name"] if prep.message and prep.message.from_name else [])
        found.update(["none missing"] if not prep.missing else [])
        found.update([f"respondent={prep.fields.get('respondent')}"])
    sizes = sorted(len(m) for m in mails)
    print(f"{len(mails)} mails, bytes: median {sizes[len(sizes) // 2]}, max {sizes[-1]}")
    for key, count in sorted(found.items(), key=lambda kv: -kv[1]):
        print(f"  {count:6d}  {key}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--html", type=float, default=0.5, help="share with an HTML part")
    parser.add_argument("--attachments", type=float, default=0.1, help="share with a file")
    parser.add_argument("--write", help="write the mails as DIR/NNNNNNNN.eml")
    parser.add_argument("--check", action="store_true", help="run the extractor over them")
    args = parser.parse_args()
    mails = corpus(args.n, args.seed, html=args.html, attachments=args.attachments)
    if args.write:
        out = Path(args.write)
        out.mkdir(parents=True, exist_ok=True)
        for k, raw in enumerate(mails):
            (out / f"{k:08d}.eml").write_bytes(raw)
    if args.check:
        _check(mails)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
