"""Which case an incoming message belongs to: our Message-IDs, the [NUMBER] tag, the reply token.

Our plus addresses name a case and carry a token: support+NUMBER.<token>@ for the consumer's
conversation, support+NUMBER.s<token>@ for one staff member, support+NUMBER.v<token>@ for the
survey's one-click answers. They are built and read here.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.store.models import StaffToken, Ticket, TimelineEntry
from handlers.message import ParsedMessage

if TYPE_CHECKING:  # pipeline imports notify, which imports reply_address from here
    from handlers.context import Context


def tag_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(rf"\[\s*({re.escape(prefix)}-\d{{8}}-\d{{4,}})\s*\]", re.IGNORECASE)


def plus_address(config: Config, number: str, token: str) -> str:
    """support+NUMBER.<token>@domain, on our support address."""
    local, _, domain = config.support_address.partition("@")
    return f"{local}+{number}.{token}@{domain}"


def plus_details(config: Config, addresses: list[str]) -> Iterator[tuple[str, str]]:
    """(NUMBER, token) of each of these addresses that is a plus address of ours."""
    ours = {a.partition("@")[0] for a in config.own_addresses}
    for address in addresses:
        local = address.strip().lower().partition("@")[0]
        base, plus, detail = local.partition("+")
        if plus and base in ours:
            number, _, token = detail.rpartition(".")
            yield number.upper(), token


def recipients(msg: ParsedMessage) -> list[str]:
    """Every address a message was sent to: To, Cc and what the delivering server recorded."""
    found = [*msg.to, *msg.cc]
    found += [msg.headers[h] for h in ("delivered-to", "x-original-to") if h in msg.headers]
    return found


def reply_address(config: Config, ticket: Ticket) -> str:
    """support+TS-20261124-0007.<token>@example.com: the case's own Reply-To address."""
    return plus_address(config, ticket.number, ticket.reply_token)


def case_by_reply_token(session: Session, config: Config, addresses: list[str]) -> Ticket | None:
    """A case named by a plus address of ours whose token matches (a guessed number does not)."""
    for number, token in plus_details(config, addresses):
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        if ticket is not None and secrets.compare_digest(ticket.reply_token, token):
            return ticket
    return None


def staff_reply_address(
    session: Session, config: Config, ticket: Ticket, address: str, now: datetime
) -> str:
    """support+NUMBER.s<token>@domain: the Reply-To of our mail to one staff member about one
    case. A reply arriving at it proves the staff member (LESSONS 4: From alone proves nothing).
    """
    address = address.strip().lower()
    token = session.scalar(
        select(StaffToken.token).where(
            StaffToken.ticket_id == ticket.id, StaffToken.address == address
        )
    )
    if token is None:
        token = secrets.token_hex(10)
        session.add(StaffToken(ticket_id=ticket.id, address=address, token=token, created_at=now))
        session.flush()
    return plus_address(config, ticket.number, f"s{token}")


def staff_token_holder(
    session: Session, config: Config, addresses: list[str]
) -> tuple[Ticket, str] | None:
    """(case, staff address) named by a staff token among these recipient addresses, or None."""
    for number, token in plus_details(config, addresses):
        if not token.startswith("s"):
            continue
        found = session.execute(
            select(Ticket, StaffToken.address)
            .join(StaffToken, StaffToken.ticket_id == Ticket.id)
            .where(StaffToken.token == token[1:], Ticket.number == number)
        ).first()
        if found is not None:
            return found[0], found[1]
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
        ctx.ticket = (
            case_by_message_ids(ctx.session, ids)
            or case_by_subject_tag(ctx.session, ctx.config.tickets.number_prefix, msg.subject)
            or case_by_reply_token(ctx.session, ctx.config, recipients(msg))
        )
        if ctx.ticket is not None and ctx.ticket.erased_at is not None:
            # Its personal data is gone (handlers/privacy.py): a consumer writing now starts
            # anew; staff have nothing left to act on there.
            number, ctx.ticket = ctx.ticket.number, None
            sender = msg.from_address.lower()
            supervisors = {a.lower() for a in ctx.config.escalation.supervisors}
            if ctx.config.staff_member(sender) or sender in supervisors:
                ctx.stop("ignored", f"staff mail about {number}, whose personal data was erased")
                return
            ctx.prep.notes.append(f"{number} was erased; the mail opens a new case")
