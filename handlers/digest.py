"""The supervisor digest: what is overdue, urgent or waiting on a decision, with a chart."""

from __future__ import annotations

import io
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import make_msgid
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import and_, func, select, update
from sqlalchemy.orm import Session

from daemon.config import Config
from daemon.store import writes
from daemon.store.models import DigestRun, EscalationStep, Ticket
from handlers import charts
from handlers.context import Services
from handlers.notify import InlinePart, build_mime, our_domain, summary_headers
from handlers.sla import CLOCKS, overdue, past_deadline
from handlers.workflow import OPEN

log = logging.getLogger(__name__)

LIST_LIMIT = 50  # cases listed per section; the counts cover the rest
# Cases a `caseloop import` brought in are the importer's backlog to triage (`tickets list
# --status received`): listed here, oldest first, they would push out the live ones.
LIVE = Ticket.extra["imported"].as_boolean().is_(None)
# open cases by age (days since received) for the chart
AGE_BUCKETS = ((0, 1), (1, 3), (3, 7), (7, 15), (15, 30), (30, None))


@dataclass
class Overdue:
    """One open case past one of its deadlines."""

    ticket: Ticket
    clock: str
    deadline: datetime
    level: int


@dataclass
class DigestData:
    """Everything one digest says, as of `now`."""

    now: datetime
    since: datetime | None  # the previous digest's time
    newly_overdue: list[Overdue] = field(default_factory=list)
    overdue: list[Overdue] = field(default_factory=list)
    by_level: dict[int, int] = field(default_factory=dict)
    by_assignee: dict[str, int] = field(default_factory=dict)
    by_category: dict[str, int] = field(default_factory=dict)
    urgent: list[Ticket] = field(default_factory=list)
    awaiting_decision: list[Ticket] = field(default_factory=list)
    needs_review: list[Ticket] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    compliance: dict[str, tuple[int, int]] = field(default_factory=dict)  # clock -> (met, all)
    ages: list[tuple[str, int, int]] = field(default_factory=list)  # bucket, on time, overdue
    new_step_ids: list[int] = field(default_factory=list)

    @property
    def has_news(self) -> bool:
        """Anything a supervisor should look at (counts alone are not news)."""
        return bool(self.overdue or self.newly_overdue or self.urgent)

    @property
    def has_content(self) -> bool:
        return self.has_news or bool(self.awaiting_decision or self.needs_review)

    @property
    def compliance_total(self) -> tuple[int, int]:
        met = sum(m for m, _ in self.compliance.values())
        return met, sum(n for _, n in self.compliance.values())


def collect(session: Session, config: Config, now: datetime) -> DigestData:
    """Read the digest's facts from the database (nothing is changed)."""
    last = session.scalar(select(func.max(DigestRun.at)).where(DigestRun.sent > 0))
    data = DigestData(now=now, since=last)
    for ticket in session.scalars(
        select(Ticket).where(overdue(now), Ticket.status.in_(OPEN)).order_by(Ticket.id)
    ):
        for clock, column in CLOCKS.items():
            deadline = getattr(ticket, column)
            if deadline is not None and deadline < now:
                data.overdue.append(Overdue(ticket, clock, deadline, ticket.escalation_level))
                break  # one line per case: its earliest open clock that is late
    data.overdue.sort(key=lambda o: o.deadline)
    data.by_level = dict(sorted(Counter(max(o.level, 1) for o in data.overdue).items()))
    data.by_assignee = dict(Counter(o.ticket.assignee or "" for o in data.overdue).most_common())
    data.by_category = dict(Counter(o.ticket.category for o in data.overdue).most_common())

    rows = session.execute(
        select(EscalationStep, Ticket)
        .join(Ticket, Ticket.id == EscalationStep.ticket_id)
        .where(EscalationStep.step == "level1", EscalationStep.in_digest_at.is_(None))
        .order_by(EscalationStep.deadline)
    ).all()
    for step, ticket in rows:
        data.new_step_ids.append(step.id)
        data.newly_overdue.append(Overdue(ticket, step.clock, step.deadline, 1))

    data.urgent = list(
        session.scalars(
            select(Ticket)
            .where(Ticket.priority == "urgent", Ticket.status.in_(OPEN), LIVE)
            .order_by(Ticket.created_at)
            .limit(LIST_LIMIT)
        )
    )
    data.awaiting_decision = list(
        session.scalars(
            select(Ticket)
            .where(Ticket.status == "received", LIVE)
            .order_by(Ticket.created_at)
            .limit(LIST_LIMIT)
        )
    )
    data.needs_review = list(
        session.scalars(
            select(Ticket)
            .where(Ticket.needs_review.is_(True))
            .order_by(Ticket.satisfaction_at)
            .limit(LIST_LIMIT)
        )
    )
    data.counts = {
        status: int(n)
        for status, n in session.execute(
            select(Ticket.status, func.count())
            .where(Ticket.status.in_(OPEN))
            .group_by(Ticket.status)
        )
    }
    data.compliance = _compliance(session, now)
    data.ages = _ages(session, now)
    return data


def _compliance(session: Session, now: datetime) -> dict[str, tuple[int, int]]:
    """Per clock, over the last 7 days: (deadlines met, deadlines met or missed).

    Met: the clock ended (first reply, acceptance, resolution) in the window without a level1
    step for it. Missed: ended late, or a still open deadline that passed in the window.
    """
    since = now - timedelta(days=7)
    ended = {
        "first_response": Ticket.first_response_at,
        "acceptance": Ticket.accepted_at,
        "resolution": Ticket.resolved_at,
    }
    result: dict[str, tuple[int, int]] = {}
    for clock, column in ended.items():
        breached = (
            select(EscalationStep.id)
            .where(
                EscalationStep.ticket_id == Ticket.id,
                EscalationStep.clock == clock,
                EscalationStep.step == "level1",
                EscalationStep.deadline <= column,
            )
            .exists()
        )
        window = and_(column >= since, column <= now)
        total = session.scalar(select(func.count()).select_from(Ticket).where(window)) or 0
        late = session.scalar(select(func.count()).select_from(Ticket).where(window, breached))
        due = getattr(Ticket, CLOCKS[clock])
        still_open = (
            session.scalar(
                select(func.count())
                .select_from(Ticket)
                .where(due >= since, due < now, Ticket.status.in_(OPEN))
            )
            or 0
        )
        result[clock] = (total - (late or 0), total + still_open)
    return result


def _ages(session: Session, now: datetime) -> list[tuple[str, int, int]]:
    """Open cases by age bucket: how many are within their deadlines and how many are late."""
    late = past_deadline(now)
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    labels = [_bucket_label(lo, hi) for lo, hi in AGE_BUCKETS]
    for created, is_late in session.execute(
        select(Ticket.created_at, late).where(Ticket.status.in_(OPEN))
    ):
        age = (now - created).total_seconds() / 86400
        for (lo, hi), label in zip(AGE_BUCKETS, labels, strict=True):
            if age >= lo and (hi is None or age < hi):
                counts[label][1 if is_late else 0] += 1
                break
    return [(label, counts[label][0], counts[label][1]) for label in labels]


def _bucket_label(lo: int, hi: int | None) -> str:
    return f">{lo}d" if hi is None else f"{lo}-{hi}d"


def chart_png(data: DigestData, zone: ZoneInfo) -> bytes:
    """A bar chart of open cases by age, within deadline vs overdue; its time in `zone`."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    labels = [label for label, _, _ in data.ages]
    on_time = [n for _, n, _ in data.ages]
    late = [n for _, _, n in data.ages]
    local = data.now.astimezone(zone)
    with matplotlib.rc_context(charts.chart_style()):
        fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
        try:
            ax.bar(labels, on_time, color="#4c9f70", label="within deadline")
            ax.bar(labels, late, bottom=on_time, color="#d1495b", label="overdue")
            ax.set_xlabel("age since received")
            ax.set_ylabel("open cases")
            ax.set_title(f"Open cases by age, {local:%Y-%m-%d %H:%M} {local.tzname()}")
            ax.legend(loc="upper right")
            fig.tight_layout()
            out = io.BytesIO()
            fig.savefig(out, format="png")
        finally:
            plt.close(fig)
    return out.getvalue()


def _context(data: DigestData, config: Config, chart_cid: str | None) -> dict[str, Any]:
    met, total = data.compliance_total
    return {
        "d": data,
        "chart_cid": chart_cid,
        "compliance_pct": round(100 * met / total) if total else None,
        "clock_pct": {
            clock: (round(100 * m / n) if n else None) for clock, (m, n) in data.compliance.items()
        },
        "list_limit": LIST_LIMIT,
        "open_total": sum(data.counts.values()),
    }


def print_digest(session: Session, services: Services, now: datetime) -> str:
    """The digest's plain-text part as of now (`caseloop digest --print`)."""
    data = collect(session, services.config, now)
    language = services.config.tickets.default_language
    mail = services.templates.render("digest", language, **_context(data, services.config, None))
    return f"Subject: {mail.subject}\n\n{mail.text}"


def send_digest(session: Session, services: Services, now: datetime) -> int:
    """Queue the digest to every supervisor now (`caseloop digest --send`); how many queued."""
    data = collect(session, services.config, now)
    queued = _queue_all(session, services, data, f"digest:manual:{now.isoformat()}")
    _mark_reported(session, data, now)
    return queued


def scheduled(session: Session, services: Services, now: datetime) -> int:
    """The digest of the latest `digest_cron` slot, once per slot across restarts.

    The slot is claimed by inserting its DigestRun row (primary key); when another instance
    or an earlier run has it, nothing happens. With nothing to say (and digest_when_empty
    off) the slot is recorded with sent=0 and no mail goes out.
    """
    config = services.config
    slot = latest_slot(config, now)
    if slot is None or not _claim(session, slot, now):
        return 0
    if not services.calendar.is_working_day(slot.astimezone(config.timezone).date()):
        # Supervisors read digests on working days (LESSONS 10): a public holiday's slot is
        # taken and skipped; the next working day's digest reports what happened meanwhile.
        session.execute(
            update(DigestRun).where(DigestRun.slot == slot).values(data={"skipped": "day off"})
        )
        return 1
    data = collect(session, config, now)
    sent = 0
    if data.has_content or config.escalation.digest_when_empty:
        sent = _queue_all(session, services, data, f"digest:{slot.isoformat()}")
        _mark_reported(session, data, now)
    session.execute(
        update(DigestRun)
        .where(DigestRun.slot == slot)
        .values(
            sent=sent,
            data={"overdue": len(data.overdue), "newly_overdue": len(data.newly_overdue)},
        )
    )
    log.info("event=digest.slot slot=%s sent=%d overdue=%d", slot, sent, len(data.overdue))
    return 1


def latest_slot(config: Config, now: datetime) -> datetime | None:
    """The latest `digest_cron` fire time at or before now (cron in the configured zone)."""
    trigger = CronTrigger.from_crontab(config.escalation.digest_cron, timezone=config.timezone)
    for lookback in (timedelta(days=1), timedelta(days=8), timedelta(days=32), timedelta(days=367)):
        cursor = now - lookback
        found: datetime | None = None
        previous: datetime | None = None
        while True:
            fire = trigger.get_next_fire_time(previous, cursor)
            if fire is None or fire > now:
                break
            found, previous = fire, fire
            cursor = fire + timedelta(seconds=1)
        if found is not None:
            return found.astimezone(now.tzinfo)
    return None


def _claim(session: Session, slot: datetime, now: datetime) -> bool:
    """Take the digest slot, once across restarts and instances."""
    taken = writes.insert_if_absent(
        session, DigestRun, ("slot",), slot=slot, at=now, sent=0, data={}
    )
    return taken is not None


def _mark_reported(session: Session, data: DigestData, now: datetime) -> None:
    if data.new_step_ids:
        session.execute(
            update(EscalationStep)
            .where(EscalationStep.id.in_(data.new_step_ids), EscalationStep.in_digest_at.is_(None))
            .values(in_digest_at=now)
        )


def _queue_all(session: Session, services: Services, data: DigestData, intent: str) -> int:
    config = services.config
    supervisors = list(dict.fromkeys(a.strip().lower() for a in config.escalation.supervisors))
    if not supervisors:
        return 0
    png = chart_png(data, config.timezone)
    queued = 0
    for recipient in supervisors:
        key = f"{intent}:{recipient}"[:200]
        if writes.intent_taken(session, key):
            continue
        raw, subject, message_id = build_digest_mail(services, data, recipient, png)
        writes.queue_outbox(
            session,
            ticket_id=None,
            kind="digest",
            intent=key,
            status="queued",
            recipient=recipient,
            message_id=message_id,
            subject=subject,
            raw=raw,
            automatic=True,
            created_at=data.now,
            next_attempt_at=data.now,
            attempts=0,
            sent_at=None,
            last_error=None,
        )
        queued += 1
    return queued


def build_digest_mail(
    services: Services, data: DigestData, recipient: str, png: bytes
) -> tuple[bytes, str, str]:
    """The digest in the recipient's language: text, and HTML showing the chart by Content-ID."""
    config = services.config
    language = config.language_of(recipient)
    cid = make_msgid(domain=our_domain(config))[1:-1]  # without the angle brackets
    mail = services.templates.render("digest", language, **_context(data, config, cid))
    headers = summary_headers(
        services.templates, config, language, recipient, mail.subject, data.now
    )
    chart = InlinePart(png, "image/png", cid, "chart.png")
    return build_mime(headers, mail, [chart]), str(headers["Subject"]), str(headers["Message-ID"])
