"""The assignee hears when the consumer writes again on an open case (evidence, "any news?",
the details asked for): in their language, threaded, with their own reply address. A burst
is folded: at most one such mail per case an hour; the rest are on the case's timeline."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from daemon.store.models import OutboxMessage
from handlers.assign import CaseSummary
from handlers.context import Context
from handlers.notify import queue_mail
from handlers.threading import staff_reply_address
from handlers.workflow import OPEN

FOLD = timedelta(hours=1)


class TellAssignee:
    name = "tell-assignee"
    description = "the assignee (else the supervisors) told the consumer wrote again, folded"

    def process(self, ctx: Context) -> None:
        ticket = ctx.ticket
        if not ctx.consumer_wrote or ticket is None or ticket.status not in OPEN:
            return
        config = ctx.config
        recipients = [ticket.assignee] if ticket.assignee else list(config.escalation.supervisors)
        if not recipients:
            return
        recent = ctx.session.scalar(
            select(func.count()).where(
                OutboxMessage.ticket_id == ticket.id,
                OutboxMessage.kind == "consumer_wrote",
                OutboxMessage.created_at > ctx.now - FOLD,
            )
        )
        if recent:
            ctx.prep.notes.append(
                f"{ticket.number}: the consumer wrote again; staff were told within the hour"
            )
            return
        summary = CaseSummary.of(ctx.session, config, ticket)
        for address in dict.fromkeys(a.strip().lower() for a in recipients):
            queue_mail(
                ctx.session,
                config,
                ctx.templates,
                ticket=ticket,
                kind="consumer_wrote",
                intent=f"consumer-wrote:{ticket.number}:{address}:{ctx.entry_id}",
                now=ctx.now,
                automatic="auto-generated",
                recipient=address,
                internal=True,
                reply_to=staff_reply_address(ctx.session, config, ticket, address, ctx.now),
                context={
                    "text": ctx.prep.new_text or ctx.message.text,
                    **summary.context(config.language_of(address)),
                },
            )
