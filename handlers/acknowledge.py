"""The templated acknowledgement a consumer gets for a new case (never for robots or old mail)."""

from __future__ import annotations

from handlers.notify import queue_mail
from handlers.pipeline import Context


class Acknowledge:
    name = "acknowledge"
    description = "queue the acknowledgement of a new case in the case's language"

    def process(self, ctx: Context) -> None:
        msg, ticket = ctx.message, ctx.ticket
        if not ctx.new_ticket or msg is None or ticket is None:
            return
        if ctx.automatic:
            return
        max_age = ctx.config.intake.ack_max_age.as_timedelta()
        if msg.date is not None and ctx.now - msg.date > max_age:
            ctx.notes.append(f"{ticket.number}: not acknowledged, mail older than ack_max_age")
            return
        policy = ctx.config.sla.policy(ticket.priority)
        row = queue_mail(
            ctx.session,
            ctx.config,
            ctx.templates,
            ticket=ticket,
            kind="ack",
            intent=f"ack:{ticket.number}",
            now=ctx.now,
            in_reply_to=msg.message_id,
            context={"policy": policy, "original_subject": msg.subject},
        )
        if row is not None:
            ticket.acknowledged_at = ctx.now
