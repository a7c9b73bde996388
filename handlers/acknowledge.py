"""The templated acknowledgement a consumer gets for a new case (never for robots or old mail)."""

from __future__ import annotations

from datetime import timedelta

from daemon.addresses import address_key
from daemon.store import writes
from handlers.context import Context
from handlers.intake import attach, change_new_case
from handlers.notify import queue_mail
from handlers.workflow import apply_transition

# RFC 2606 / RFC 6761 names: examples and tests, never a real sender's domain
_RESERVED = (
    ".example",
    ".test",
    ".invalid",
    ".localhost",
    ".example.com",
    ".example.net",
    ".example.org",
)
_RESERVED_NAMES = frozenset({"example.com", "example.net", "example.org", "localhost"})


class Acknowledge:
    name = "acknowledge"
    description = "acknowledge a new case, or ask for its missing registration details"

    @staticmethod
    def _domain_burst(ctx: Context, address: str) -> bool:
        """Whether the hour's acknowledgements to this (private) domain are used up."""
        limit = ctx.config.intake.acks_per_domain_per_hour
        domain = address_key(address).rpartition("@")[2]
        if not limit or not domain or domain in ctx.config.intake.public_mail_domains:
            return False
        if domain.endswith(_RESERVED) or domain in _RESERVED_NAMES:
            return False
        sent = writes.automatic_mail_to_domain(ctx.session, domain, ctx.now - timedelta(hours=1))
        if sent < limit:
            return False
        assert ctx.ticket is not None
        ctx.prep.notes.append(
            f"{ctx.ticket.number}: not acknowledged, {sent} acknowledgements to @{domain} in "
            f"the last hour (acks_per_domain_per_hour {limit})"
        )
        return True

    def process(self, ctx: Context) -> None:
        ticket = ctx.ticket
        if not ctx.new_ticket or ticket is None or ctx.prep.automatic:
            return
        msg = ctx.message
        max_age = ctx.config.intake.ack_max_age.as_timedelta()
        if msg.date is not None and ctx.now - msg.date > max_age:
            ctx.prep.notes.append(f"{ticket.number}: not acknowledged, mail older than ack_max_age")
            return
        if self._domain_burst(ctx, ticket.complainant_email):
            return
        queued = queue_mail(
            ctx.session,
            ctx.config,
            ctx.templates,
            ticket=ticket,
            kind="request_info" if ctx.prep.missing else "ack",
            intent=f"ack:{ticket.number}",
            now=ctx.now,
            in_reply_to=msg.message_id,
            references=[msg.message_id] if msg.message_id else [],
            context={
                "policy": ctx.config.sla.policy(ticket.priority),
                "original_subject": msg.subject,
                "missing": ctx.prep.missing,
            },
        )
        if queued is None:
            return
        change_new_case(ctx, ticket, acknowledged_at=ctx.now)
        if ctx.prep.missing and ticket.channel == "email":
            # Waiting on the consumer for the details just asked for: the clocks pause and
            # their reply brings the case back to `received` (a form case stays `received`,
            # issue 4). The request above is the consumer's mail for this move.
            case = attach(ctx.session, ticket)
            apply_transition(
                ctx.session,
                ctx.services,
                case,
                "waiting",
                actor="caseloop",
                now=ctx.now,
                reason="registration details missing: " + ", ".join(ctx.prep.missing),
                notify=False,
            )
            ctx.ticket = case
