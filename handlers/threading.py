"""Which case an incoming message belongs to: our Message-IDs, the [NUMBER] tag, the reply token."""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.store.models import Ticket, TimelineEntry

if TYPE_CHECKING:  # pipeline imports notify, which imports reply_address from here
    from handlers.pipeline import Context


def tag_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"\[\s*({re.escape(prefix)}-\d{{8}}-\d{{4,}})\s*\]", re.IGNORECASE)


def reply_address(config: Config, ticket: Ticket) -> str:
    """support+TS-20261124-0007.<token>@example.com: the case's own Reply-To address."""
    local, _, domain = config.support_address.partition("@")
    return f"{local}+{ticket.number}.{ticket.reply_token}@{domain}"


def case_by_reply_token(session: Session, config: Config, addresses: list[str]) -> Ticket | None:
    """A case named by a plus address of ours whose token matches (a guessed number does not)."""
    ours = {a.partition("@")[0] for a in config.own_addresses}
    for address in addresses:
        local, _, _domain = address.lower().partition("@")
        base, plus, detail = local.partition("+")
        if not plus or base not in ours:
            continue
        number, _, token = detail.rpartition(".")
        ticket = session.scalar(select(Ticket).where(Ticket.number == number.upper()))
        if ticket is not None and secrets.compare_digest(ticket.reply_token, token):
            return ticket
    return None


def case_by_message_ids(session: Session, ids: list[str]) -> Ticket | None:
    """The case that holds the newest of these Message-IDs (sent or received)."""
    if not ids:
        return None
    rows = session.execute(
        select(TimelineEntry.message_id, TimelineEntry.ticket_id).where(
            TimelineEntry.message_id.in_(ids)
        )
    ).all()
    if not rows:
        return None
    found = dict(rows)
    for message_id in reversed(ids):  # the nearest parent wins
        if message_id in found:
            return session.get(Ticket, found[message_id])
    return None


def case_by_subject_tag(session: Session, prefix: str, subject: str) -> Ticket | None:
    """A [NUMBER] tag naming an existing case; a tag naming none threads nowhere."""
    for number in tag_pattern(prefix).findall(subject):
        ticket = session.scalar(select(Ticket).where(Ticket.number == number.upper()))
        if ticket is not None:
            return ticket
    return None


class FindCase:
    name = "find-case"
    description = "thread a reply onto its case by Message-ID, then by subject tag"

    def process(self, ctx: Context) -> None:
        if ctx.ticket is not None:  # an earlier step (a bounce) already knows the case
            return
        msg = ctx.message
        assert msg is not None
        ids = list(msg.references) + [i for i in msg.in_reply_to if i not in msg.references]
        recipients = [*msg.to, *msg.cc]
        recipients += [
            msg.headers[h] for h in ("delivered-to", "x-original-to") if h in msg.headers
        ]
        ctx.ticket = (
            case_by_message_ids(ctx.session, ids)
            or case_by_subject_tag(ctx.session, ctx.config.tickets.number_prefix, msg.subject)
            or case_by_reply_token(ctx.session, ctx.config, recipients)
        )
