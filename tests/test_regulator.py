"""PROCEDURE §4: a complaint of personal safety or major property loss is reported to the
regulator when it is registered, once; an ordinary complaint is not."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from cli_run import run_caseloop
from conftest import write_config
from sqlalchemy import select

from daemon.app import App
from daemon.maildirs import deliver_to_maildir
from daemon.store.models import OutboxMessage, Ticket, TimelineEntry

REGULATOR = """
[intake]
ack_max_age = "3650 days"

[escalation]
supervisors = ["lead@example.com"]

[regulator]
to = ["report@amr.example.gov.cn"]
major_loss_amount = 50000
"""

SAFETY = (
    "我叫李明，电话13800138000。我在鑫达家电官方旗舰店购买的电动车，电池充电时起火，"
    "孩子手被烧伤送医。订单号20261101123，金额3999元，要求赔偿。"
)
ORDINARY = "我在鑫达家电官方旗舰店购买的电水壶，外壳有划痕，订单号20261101124，要求换货。"
MAJOR_LOSS = "我在华彩装饰有限公司装修房子，对方收了全款后跑路，损失86000元，要求退款。"


def send(app: App, body: str, sender: str, name: str) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"] = sender, "support@example.com"
    msg["Subject"], msg["Message-ID"] = "投诉", make_msgid(domain="example.net")
    msg.set_content(body)
    inbox = app.config.mailboxes[0].path
    assert inbox is not None
    deliver_to_maildir(inbox, msg.as_bytes(), name=name)


def reports(app: App) -> list[email.message.EmailMessage]:
    with app.sessions() as session:
        raws = session.scalars(select(OutboxMessage.raw).where(OutboxMessage.kind == "regulator"))
        return [
            email.message_from_bytes(raw, policy=policy.default)  # type: ignore[misc]
            for raw in raws
        ]


def test_a_safety_complaint_is_reported_once_naming_the_case_and_the_business(make_app) -> None:
    app: App = make_app(REGULATOR)
    send(app, SAFETY, "li@example.net", "safety")
    send(app, ORDINARY, "wang@example.net", "ordinary")
    app.run_once()
    app.run_once()  # a second round changes nothing
    (report,) = reports(app)
    with app.sessions() as session:
        ticket = session.scalars(
            select(Ticket).where(Ticket.complainant_email == "li@example.net")
        ).one()
        note = session.scalars(
            select(TimelineEntry).where(TimelineEntry.text.startswith("reported to the regulator"))
        ).one()
    assert str(report["To"]) == "report@amr.example.gov.cn"
    assert ticket.number in str(report["Subject"]) and "人身安全" in str(report["Subject"])
    assert report["Reply-To"] == "support@example.com"  # not the consumer's reply token
    text = report.get_body(("plain",)).get_content()
    assert ticket.number in text and "鑫达家电官方旗舰店" in text and "起火" in text
    assert "13800138000" not in text and "李明" not in text  # contact = "none" by default
    assert note.ticket_id == ticket.id and note.internal


def test_a_major_loss_is_reported_and_the_contact_named_as_configured(make_app) -> None:
    app: App = make_app(REGULATOR + 'contact = "name_phone"\n')
    send(app, MAJOR_LOSS + "联系人张伟，电话13912345678。", "zhang@example.net", "loss")
    send(app, SAFETY.replace("起火，孩子手被烧伤送医", "不能充电"), "li@example.net", "plain")
    app.run_once()
    (report,) = reports(app)
    text = report.get_body(("plain",)).get_content()
    assert "重大财产损失" in text and "86000.00" in text
    assert "13912345678" in text


def test_without_a_regulator_address_nothing_is_reported(make_app) -> None:
    app: App = make_app(REGULATOR.replace('to = ["report@amr.example.gov.cn"]', ""))
    send(app, SAFETY, "li@example.net", "safety")
    app.run_once()
    assert reports(app) == []


def test_check_config_warns_when_urgent_cases_would_alert_nobody(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    out = run_caseloop("check-config", config=config, check=False).stdout
    assert "warning: urgent cases alert nobody" in out
    config = write_config(tmp_path, REGULATOR)
    out = run_caseloop("check-config", config=config, check=False).stdout
    assert "warning: urgent cases alert nobody" not in out
    assert "regulator: report@amr.example.gov.cn" in out
