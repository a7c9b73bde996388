"""The satisfaction survey after resolution (PROCEDURE §7): send, read answers, close or appeal."""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.clock import in_window, window_before
from daemon.config import Config
from daemon.store.models import OutboxMessage, Ticket, TimelineEntry
from handlers.authresults import domain_results
from handlers.context import Context, Services
from handlers.notify import queue_mail
from handlers.threading import (
    plus_address,
    plus_details,
    recipients,
    staff_reply_address,
    tag_pattern,
)
from handlers.workflow import apply_transition

# Set in ctx.prep.fields by FindSurveyCase when a recipient address carried the case's current
# survey token: the mail answers the survey whoever sent it (a forwarded one-click answer).
TOKEN_PROVED = "survey_token_ok"

ACTOR = "caseloop"
RATE_LIMIT_RETRY = timedelta(hours=1)  # a survey held back by the hourly cap is tried again
FOLLOW_UP_WITHIN = timedelta(hours=72)  # PROCEDURE §7: 72小时内回访确认满意度
# Planned this long before the 72 hours run out: time for the sweep, the sender and a retry.
FOLLOW_UP_MARGIN = timedelta(hours=1)


# --- scheduling -------------------------------------------------------------------------------


def on_transition(ticket: Ticket, old: str, new: str, services: Services, now: datetime) -> None:
    """Schedule the survey when a case is resolved; forget it when the case moves on."""
    if new == "resolved" and old != "rejected":
        due = services.calendar.add(now, services.config.sla.survey_after)
        ticket.survey_due_at = follow_up_at(services.config, now, due)
        ticket.survey_token = secrets.token_hex(8)  # a new resolution, a new survey
        ticket.survey_sent_at = None
        ticket.survey_expires_at = None
        ticket.satisfaction_score = None  # the fields describe this resolution's answer
        ticket.satisfaction_at = None
        ticket.satisfaction_comment = None
        ticket.satisfaction_outcome = None
    elif old == "resolved":
        ticket.survey_due_at = None
        ticket.survey_expires_at = None


def follow_up_at(config: Config, resolved: datetime, due: datetime) -> datetime:
    """When the survey goes out: `survey_after` (`due`) moved into [delivery] consumer_hours,
    but never past 72 hours after the resolution (PROCEDURE §7).

    When the window's next opening comes after the deadline, the survey goes in the window
    before it (an hour before that window closes, or at its opening when it is that short);
    when no window lies between the resolution and the deadline, at once (the sweep then
    sends it outside the window and notes why).
    """
    hours, zone = config.delivery.consumer_hours, config.timezone
    deadline = resolved + FOLLOW_UP_WITHIN - FOLLOW_UP_MARGIN
    target = min(due, deadline)
    at = in_window(target, hours, zone)
    if at <= deadline:
        return at
    opened, closed = window_before(target, hours, zone)
    latest = max(opened, min(closed - FOLLOW_UP_MARGIN, deadline))
    return latest if latest >= resolved else resolved


# --- the sweep ----------------------------------------------------------------------------


def sweep(session: Session, services: Services, now: datetime) -> int:
    """Send the surveys that are due and close the cases whose survey went unanswered."""
    steps = 0
    # SKIP LOCKED: a case another instance's sweep is visiting is its to do (PostgreSQL).
    due = session.scalars(
        select(Ticket)
        .where(Ticket.survey_due_at <= now)
        .order_by(Ticket.survey_due_at)
        .with_for_update(skip_locked=True)
    ).all()
    for ticket in due:
        steps += _send_survey(session, services, ticket, now)
    expired = session.scalars(
        select(Ticket)
        .where(Ticket.survey_expires_at <= now)
        .order_by(Ticket.survey_expires_at)
        .with_for_update(skip_locked=True)
    ).all()
    for ticket in expired:
        steps += _close_unanswered(session, services, ticket, now)
    return steps


def _bounced(session: Session, address: str) -> bool:
    found = session.scalar(
        select(OutboxMessage.id)
        .where(OutboxMessage.recipient == address.lower(), OutboxMessage.status == "bounced")
        .limit(1)
    )
    return found is not None


def _note(session: Session, ticket: Ticket, now: datetime, text: str, **data: object) -> None:
    session.add(
        TimelineEntry(
            ticket_id=ticket.id,
            at=now,
            kind="survey",
            actor=ACTOR,
            internal=True,
            text=text,
            data=dict(data),
        )
    )


def _send_survey(session: Session, services: Services, ticket: Ticket, now: datetime) -> int:
    config = services.config
    ticket.survey_due_at = None
    if ticket.status != "resolved" or ticket.survey_token is None:
        return 1
    close_after = services.calendar.add(now, config.sla.survey_close_after)
    if _bounced(session, ticket.complainant_email):
        _note(
            session,
            ticket,
            now,
            "survey not sent: mail to the complainant's address has bounced",
            event="survey_skipped",
        )
        ticket.survey_expires_at = close_after  # closes as unanswered, like a silent survey
        return 1
    intent = f"survey:{ticket.number}:{ticket.survey_token}"
    hold = not _window_misses_deadline(config, ticket, now)
    queued = queue_mail(
        session,
        config,
        services.templates,
        ticket=ticket,
        kind="survey",
        intent=intent,
        now=now,
        automatic="auto-generated",
        context=survey_context(session, config, ticket),
        consumer_hours=hold,  # held to [delivery] consumer_hours when sent, too (bar the 72 h)
    )
    if queued is None and not _intent_taken(session, intent):
        ticket.survey_due_at = now + RATE_LIMIT_RETRY  # held back by the hourly cap
        return 1
    if queued is not None and not hold:
        _note(
            session,
            ticket,
            now,
            "survey sent outside [delivery] consumer_hours: the window opens again only after"
            " the 72-hour follow-up deadline (PROCEDURE §7)",
            event="survey_outside_hours",
        )
    ticket.survey_sent_at = now
    ticket.survey_expires_at = close_after
    return 1


def _window_misses_deadline(config: Config, ticket: Ticket, now: datetime) -> bool:
    """Whether holding the survey for consumer hours would send it after the 72-hour
    follow-up deadline that is still ahead (past it, the survey waits for the morning)."""
    if ticket.resolved_at is None:
        return False
    deadline = ticket.resolved_at + FOLLOW_UP_WITHIN
    hours = config.delivery.consumer_hours
    return now < deadline < in_window(now, hours, config.timezone)


def _intent_taken(session: Session, intent: str) -> bool:
    return (
        session.scalar(select(OutboxMessage.id).where(OutboxMessage.intent == intent)) is not None
    )


def _close_unanswered(session: Session, services: Services, ticket: Ticket, now: datetime) -> int:
    ticket.survey_expires_at = None
    if ticket.status != "resolved":
        return 1
    ticket.satisfaction_outcome = "no_answer"
    apply_transition(
        session,
        services,
        ticket,
        "closed",
        actor=ACTOR,
        now=now,
        reason=f"no answer to the survey within {services.config.sla.survey_close_after}",
        notify=True,  # SPEC §4: the consumer is told their case is closed (templates/*/closed)
        consumer_hours=True,  # scheduled mail: sent in [delivery] consumer_hours only
    )
    return 1


def survey_address(config: Config, ticket: Ticket) -> str:
    """support+NUMBER.v<survey token>@domain: where one-click answers go."""
    return plus_address(config, ticket.number, f"v{ticket.survey_token}")


def survey_context(session: Session, config: Config, ticket: Ticket) -> dict[str, object]:
    """What the survey and clarification templates show: the resolution and the answer links."""
    address = survey_address(config, ticket)

    def answer_link(word: str) -> str:
        subject = quote(f"[{ticket.number}] {word}", safe="")
        return f"mailto:{address}?subject={subject}&body={quote(word, safe='')}"

    return {
        "resolution": resolution_text(session, ticket),
        "answer_link": answer_link,
        "survey_address": address,
        "close_after": config.sla.survey_close_after,
    }


def resolution_text(session: Session, ticket: Ticket) -> str | None:
    """How the case was resolved: the reason given when resolving, else the last staff reply."""
    entries = session.scalars(
        select(TimelineEntry)
        .where(
            TimelineEntry.ticket_id == ticket.id, TimelineEntry.kind.in_(("status", "message_out"))
        )
        .order_by(TimelineEntry.id.desc())
        .limit(50)
    ).all()
    for entry in entries:
        if entry.kind == "status" and (entry.data or {}).get("to") == "resolved":
            if entry.text:
                return entry.text[:2000]
            break
    for entry in entries:
        if entry.kind == "message_out" and (entry.data or {}).get("mail_kind") == "reply":
            return (entry.text or "").strip()[:2000] or None
    return None


# --- reading answers ----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    score: int | None  # 1-5 when given or implied by a rating word
    outcome: str  # satisfied | neutral | dissatisfied


_UNIT = r"(?:分(?!钟)|星|颗星|stars?|points?|/\s*5|out of 5)"
_CN_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5}
_ALONE = re.compile(rf"^[^\d]{{0,16}}?(?<![\d.])([1-5])\s*{_UNIT}?[\s\W]*$")
_WITH_UNIT = re.compile(rf"(?<![\d.])([1-5])\s*{_UNIT}")
_CN_WITH_UNIT = re.compile(r"([一二两三四五])\s*(?:分(?!钟)|星|颗星)")

# complaint-shaped: the case is not solved for them (checked first: "不满意" holds "满意")
_NEGATIVE = re.compile(
    r"不满意|很差|太差|极差|差评|差劲|没解决|没有解决|未解决|没处理|没有处理|未处理|没修好|没有修好"
    r"|还是(?:漏|坏|不|没|有问题|一样)|仍然|依然|还在漏|又坏|又漏|问题还在|申诉|复核|不认可|不接受"
    r"|没收到|没有收到|没到账|没退|不好(?!意思)|失望|敷衍|垃圾|不行"
    r"|not (?:very )?(?:satisfied|happy|resolved|fixed|solved|ok(?:ay)?|good|working)"
    r"|unsatisfied|dissatisfied|unhappy|unresolved|terrible|awful|horrible|useless|\bbad\b|\bpoor\b"
    r"|disappoint|\bappeal|no refund|still (?:not|no\b|broken|leak|faulty|waiting|doesn|does not"
    r"|isn|is not|won|hasn|has not|haven|have not)"
    r"|(?:didn'?t|did not|doesn'?t|does not|hasn'?t|has not|haven'?t|have not|never|wasn'?t"
    r"|was not|isn'?t|is not)\s+(?:\w+\s+)?(?:work|fix|resolv|solv|receiv|arriv|refund|help)",
)
_RATING_NEGATIVE = re.compile(r"不满意|很差|极差|差评|dissatisfied|unsatisfied|not satisfied")
_NOT_NEGATIVE = re.compile(r"not bad|不错|没问题|没有问题")
_NEUTRAL = re.compile(
    r"基本满意|还行|还可以|一般|凑合|马马虎虎|勉强|差不多|部分解决"
    r"|so-so|so so|average|neutral|could be better|mediocre|not bad|partly|partially|more or less"
)
_STRONG_POSITIVE = re.compile(
    r"满意|已解决|解决了|已经解决|修好了|太好了|非常好|很好|完美|点赞"
    r"|satisfied|resolved|solved|fixed|all good|excellent|perfect|great|very good|happy|awesome"
)
_POSITIVE = re.compile(
    r"谢谢|感谢|多谢|没问题|没有问题|不错|好的|可以了|挺好|收到了|已收到|到账了"
    r"|thanks|thank you|\bthx\b|\bok\b|\bokay\b|\bfine\b|\bgood\b|works now|received"
)


def _normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def _explicit_score(text: str) -> int | None:
    first_line = next((line for line in text.splitlines() if line.strip()), "")
    for candidate in (_normalise(first_line), _normalise(text)):
        match = _ALONE.match(candidate) or _WITH_UNIT.search(candidate)
        if match:
            return int(match.group(1))
        match = _CN_WITH_UNIT.search(candidate)
        if match:
            return _CN_DIGITS[match.group(1)]
    return None


def _outcome_of(score: int) -> str:
    return "satisfied" if score >= 4 else "neutral" if score == 3 else "dissatisfied"


def read_answer(text: str) -> Answer | None:
    """The consumer's verdict in their own words (zh-CN or en), or None when it is unclear."""
    explicit = _explicit_score(text)
    plain = _normalise(text)
    if not plain:
        return None
    if _NEGATIVE.search(_NOT_NEGATIVE.sub(" ", plain)):
        if explicit is not None and explicit <= 2:
            return Answer(explicit, "dissatisfied")
        return Answer(1 if _RATING_NEGATIVE.search(plain) else None, "dissatisfied")
    if explicit is not None:
        return Answer(explicit, _outcome_of(explicit))
    if _NEUTRAL.search(plain):
        return Answer(3, "neutral")
    if _STRONG_POSITIVE.search(plain):
        return Answer(5, "satisfied")
    if _POSITIVE.search(plain):
        return Answer(4, "satisfied")
    return None


# --- the deciding steps ------------------------------------------------------------------


def case_by_survey_token(session: Session, config: Config, addresses: list[str]) -> Ticket | None:
    """The case whose current survey token one of these plus addresses of ours carries."""
    for number, token in plus_details(config, addresses):
        if not token.startswith("v") or len(token) < 9:
            continue
        ticket = session.scalar(select(Ticket).where(Ticket.number == number))
        if (
            ticket is not None
            and ticket.survey_token is not None
            and secrets.compare_digest(ticket.survey_token, token[1:])
        ):
            return ticket
    return None


class FindSurveyCase:
    name = "find-survey-case"
    description = "a one-click survey answer names its case by the survey token in the address"

    def process(self, ctx: Context) -> None:
        ticket = case_by_survey_token(ctx.session, ctx.config, recipients(ctx.message))
        if ticket is None:
            return
        ctx.ticket = ticket  # the token names the case, whatever else the mail says
        ctx.prep.fields[TOKEN_PROVED] = True


class SurveyAnswer:
    name = "survey-answer"
    description = "the complainant's answer to a survey (or a reply after resolution) decides"

    def process(self, ctx: Context) -> None:
        ticket = ctx.ticket
        if ticket is None or ctx.new_ticket or ticket.status != "resolved" or ctx.prep.automatic:
            return
        sender = ctx.message.from_address.lower()
        by_token = bool(ctx.prep.fields.get(TOKEN_PROVED))
        from_complainant = (
            sender == ticket.complainant_email.lower() and ctx.message.sender_header == "from"
        )
        if not by_token and not from_complainant:
            return  # a third party's mail is on the case for staff, and counts for nothing
        if not by_token:
            trusted = ctx.config.escalation.trusted_authserv_ids
            results = domain_results(ctx.message.raw, sender, trusted)
            dispute = results.dispute() if results is not None else None
            if dispute is not None:
                _disputed(ctx, ticket, dispute)
                return  # From is the complainant's but our MX says it was not sent by them
        text = ctx.prep.new_text.strip()
        answer = read_answer(text)
        if answer is None and by_token:
            answer = read_answer(_bare_subject(ctx))
        surveyed = ticket.survey_sent_at is not None or by_token
        services = ctx.services
        if answer is None:
            if surveyed:
                _unclear(ctx, services, ticket, text)
            return
        if answer.outcome != "dissatisfied" and not surveyed:
            return  # thanks before the survey: the survey will still ask
        _record(ctx, ticket, answer, text)
        if answer.outcome == "dissatisfied":
            _appeal(ctx, services, ticket, answer, text, sender)
        else:
            _close(ctx, services, ticket, answer, sender)


def _disputed(ctx: Context, ticket: Ticket, dispute: str) -> None:
    """A survey answer under the complainant's From that our MX says is forged: a comment for
    staff on the timeline, and the case, its survey and the complainant are left as they are."""
    text = f"not counted as the complainant's answer ({dispute}): kept as a comment"
    _answer_entry(ctx, ticket, text, internal=True, outcome="disputed", dispute=dispute)
    ctx.prep.notes.append(
        f"{ticket.number}: survey answer from the complainant's address with {dispute}: "
        "kept as a comment, nothing changed"
    )


def _bare_subject(ctx: Context) -> str:
    subject = tag_pattern(ctx.config.tickets.number_prefix).sub(" ", ctx.message.subject)
    return re.sub(
        r"^\s*(?:(?:re|aw|sv|vs|fwd?|回复|答复|转发)\s*[:：]\s*)+", "", subject, flags=re.I
    )


def _record(ctx: Context, ticket: Ticket, answer: Answer, text: str) -> None:
    ticket.satisfaction_score = answer.score
    ticket.satisfaction_at = ctx.now
    ticket.satisfaction_comment = text[:2000] or None
    ticket.satisfaction_outcome = answer.outcome
    text = f"survey answer: {answer.outcome}" + (
        f" ({answer.score}/5)" if answer.score is not None else ""
    )
    _answer_entry(ctx, ticket, text, internal=False, score=answer.score, outcome=answer.outcome)


def _answer_entry(
    ctx: Context, ticket: Ticket, text: str, *, internal: bool, **data: object
) -> None:
    """The survey entry on the timeline for the incoming mail (ctx.entry_id) that answered."""
    ctx.session.add(
        TimelineEntry(
            ticket_id=ticket.id,
            at=ctx.now,
            kind="survey",
            actor=ctx.message.from_address.lower(),
            internal=internal,
            text=text,
            data={**data, "entry_id": ctx.entry_id},
        )
    )


def _close(ctx: Context, services: Services, ticket: Ticket, answer: Answer, sender: str) -> None:
    if answer.outcome == "neutral":
        ticket.needs_review = True  # listed in the supervisors' digest
    apply_transition(
        ctx.session,
        services,
        ticket,
        "closed",
        actor=sender,
        now=ctx.now,
        reason=f"satisfaction survey: {answer.outcome}"
        + (f" ({answer.score}/5)" if answer.score is not None else ""),
        notify=False,  # the thank-you says it
    )
    queue_mail(
        ctx.session,
        ctx.config,
        ctx.templates,
        ticket=ticket,
        kind="survey_thanks",
        intent=f"survey-thanks:{ticket.number}:{ticket.survey_token}",
        now=ctx.now,
        in_reply_to=ctx.message.message_id,
        automatic="auto-replied",
        context={"outcome": answer.outcome, "score": answer.score},
    )


def _appeal(
    ctx: Context, services: Services, ticket: Ticket, answer: Answer, text: str, sender: str
) -> None:
    token = ticket.survey_token
    apply_transition(
        ctx.session,
        services,
        ticket,
        "in_progress",
        actor=sender,
        now=ctx.now,
        reason="appeal: the consumer says the case is not resolved"
        + (f" (survey score {answer.score}/5)" if answer.score is not None else ""),
    )
    for supervisor in ctx.config.escalation.supervisors:
        queue_mail(
            ctx.session,
            ctx.config,
            ctx.templates,
            ticket=ticket,
            kind="appeal",
            intent=f"appeal:{ticket.number}:{token}:{supervisor.lower()}",
            now=ctx.now,
            automatic="auto-generated",
            recipient=supervisor,
            internal=True,
            reply_to=staff_reply_address(ctx.session, ctx.config, ticket, supervisor, ctx.now),
            context={"answer_text": text[:2000], "score": answer.score},
        )


def _unclear(ctx: Context, services: Services, ticket: Ticket, text: str) -> None:
    ticket.satisfaction_comment = text[:2000] or None
    text = "survey answer unclear: recorded as a comment"
    _answer_entry(ctx, ticket, text, internal=False, outcome="unclear")
    queue_mail(  # once per survey: a second unclear answer is left for staff, never a loop
        ctx.session,
        ctx.config,
        ctx.templates,
        ticket=ticket,
        kind="survey_clarify",
        intent=f"survey-clarify:{ticket.number}:{ticket.survey_token}",
        now=ctx.now,
        in_reply_to=ctx.message.message_id,
        automatic="auto-replied",
        context=survey_context(ctx.session, ctx.config, ticket),
    )
