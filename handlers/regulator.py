"""PROCEDURE §4: a complaint of personal safety or major property loss is reported to the
regulator at the same time as it is registered
("涉及人身安全或重大财产损失的投诉,需同步向监管部门报备").

Once per case, at registration, to each `[regulator] to` address: a formal zh-CN report from
templates/zh-CN/regulator.txt, naming the case, the business and what happened, and the
complainant only as far as `[regulator] contact` allows. Recorded on the case's timeline.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from daemon.store.models import Ticket, TimelineEntry
from handlers.assign import CaseSummary
from handlers.classify import safety_risk
from handlers.context import Context
from handlers.notify import queue_mail


def reason_to_report(ctx: Context, ticket: Ticket) -> str | None:
    """Why this new case must be reported: a safety risk in the consumer's words, or a
    claimed loss at or over major_loss_amount; None when neither."""
    prep, msg = ctx.prep, ctx.message
    text = prep.words or f"{msg.subject}\n{prep.new_text or msg.text}"
    word = safety_risk(text) if ticket.priority == "urgent" else None
    if word is not None:
        return f"人身安全：{word}"
    amount = _amount(prep.fields.get("amount") or ticket.extra.get("amount"))
    limit = ctx.config.regulator.major_loss_amount
    if amount is not None and amount >= Decimal(str(limit)):
        return f"重大财产损失：{amount:.2f} 元（报备线 {limit:g} 元）"
    return None


def _amount(value: object) -> Decimal | None:
    try:
        return Decimal(str(value).replace(",", "")) if value not in (None, "") else None
    except InvalidOperation:
        return None


def contact(ctx: Context, ticket: Ticket) -> dict[str, str]:
    """The complainant as far as the operator lets the report name them."""
    level = ctx.config.regulator.contact
    shown: dict[str, str] = {}
    if level in ("name", "name_phone", "all") and ticket.complainant_name:
        shown["姓名"] = ticket.complainant_name
    if level in ("name_phone", "all") and ticket.complainant_phone:
        shown["电话"] = ticket.complainant_phone
    if level == "all":
        shown["邮箱"] = ticket.complainant_email
    return shown


_PHONE = re.compile(
    r"(?<!\d)(?:\+?86[- ]?)?1[3-9]\d(?:[- ]?\d{4}){2}(?!\d)|(?<!\d)0\d{2,3}-?\d{7,8}(?!\d)"
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


def redacted(text: str, ticket: Ticket, level: str) -> str:
    """The consumer's words without what `contact` keeps from the regulator."""
    if level == "all":
        return text
    text = _EMAIL.sub("[邮箱已隐去]", text)
    if level != "name_phone":
        text = _PHONE.sub("[电话已隐去]", text)
    if level == "none" and ticket.complainant_name and len(ticket.complainant_name) > 1:
        text = text.replace(ticket.complainant_name, "[姓名已隐去]")
    return text


class ReportToRegulator:
    name = "regulator"
    description = "a case of personal safety or major loss reported to the regulator, once"

    def process(self, ctx: Context) -> None:
        ticket, config = ctx.ticket, ctx.config
        if not ctx.new_ticket or ticket is None or ctx.prep.automatic or not config.regulator.to:
            return
        why = reason_to_report(ctx, ticket)
        if why is None:
            return
        summary = CaseSummary.of(ctx.session, config, ticket)
        context = {
            "why": why,
            "complaint": redacted(summary.complaint, ticket, config.regulator.contact),
            "contact": contact(ctx, ticket),
            "product": ticket.extra.get("product"),
            "demand": ticket.extra.get("demand") or ctx.prep.fields.get("demand"),
        }
        sent = [
            address
            for address in config.regulator.to
            if queue_mail(
                ctx.session,
                config,
                ctx.templates,
                ticket=ticket,
                kind="regulator",
                intent=f"regulator:{ticket.number}:{address.lower()}",
                now=ctx.now,
                automatic="auto-generated",
                recipient=address,
                internal=True,
                reply_to=config.support_address,
                language="zh-CN",
                context=context,
            )
        ]
        if sent:
            ctx.session.add(
                TimelineEntry(
                    ticket_id=ticket.id,
                    at=ctx.now,
                    kind="note",
                    actor="caseloop",
                    internal=True,
                    text=f"reported to the regulator ({', '.join(sent)}): {why}",
                    data={"regulator": {"to": sent, "why": why}},
                )
            )
