"""Statistics over a period (PROCEDURE §8, `caseloop report`): counts, timeliness, satisfaction."""

from __future__ import annotations

import base64
import csv
import io
import math
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import jinja2
from sqlalchemy import select
from sqlalchemy.orm import Session

from daemon.clock import Duration, WorkCalendar
from daemon.config import PRIORITIES, Config, SlaConfig
from daemon.resources import shipped_dir
from daemon.spreadsheet import spreadsheet_safe
from daemon.store.models import Ticket
from handlers import charts
from handlers.notify import describe_duration
from handlers.survey import FOLLOW_UP_WITHIN
from handlers.workflow import OPEN

TOP_RESPONDENTS = 10
NONE = "(none)"
BREAKDOWNS = ("channel", "category", "priority", "status", "respondent", "satisfaction")
ANSWERED = ("satisfied", "neutral", "dissatisfied")


@dataclass
class Share:
    """`part` of `whole`, as the report prints it."""

    part: int
    whole: int

    @property
    def percent(self) -> float | None:
        return round(100.0 * self.part / self.whole, 1) if self.whole else None

    def __str__(self) -> str:
        pct = self.percent
        return f"{self.part} of {self.whole}" + (f" ({pct:.1f}%)" if pct is not None else "")


@dataclass(frozen=True)
class Limits:
    """The time limits a report judges by, as `[sla]` configures them, in the report's words."""

    acceptance: str  # "3 working days", or "3 working days (urgent: 1 working day)"
    resolution: str  # "15 days of acceptance": counted from it
    working_time: str  # "working days on the CN holiday calendar, counted 09:00-18:00"

    @classmethod
    def of(cls, sla: SlaConfig) -> Limits:
        if sla.business_hours is None:
            hours = "all day"
        else:
            start, end = sla.business_hours
            hours = f"{start:%H:%M}-{end:%H:%M}"
        return cls(
            acceptance=_limit(sla, "acceptance"),
            resolution=_limit(sla, "resolution", " of acceptance"),
            working_time=f"working days on the {sla.calendar} holiday calendar, counted {hours}",
        )


def _limit(sla: SlaConfig, clock: str, counted_from: str = "") -> str:
    """One clock's limit: the one most priorities share, then those of the other priorities."""
    by_priority: dict[Duration, list[str]] = {}
    for priority in PRIORITIES:
        by_priority.setdefault(getattr(sla.policy(priority), clock), []).append(priority)
    common, *others = sorted(by_priority.items(), key=lambda kv: -len(kv[1]))
    text = describe_duration(common[0], "en") + counted_from
    if others:
        each = (f"{', '.join(names)}: {describe_duration(d, 'en')}" for d, names in others)
        text += f" ({'; '.join(each)})"
    return text


@dataclass
class Report:
    """Every figure of one report; each breakdown counts every case exactly once."""

    since: date | None
    until: date | None
    zone: str
    limits: Limits
    total: int = 0
    breakdowns: dict[str, Counter[str]] = field(default_factory=dict)
    first_response_hours: list[float] = field(default_factory=list)
    accepted_in_time: Share = field(default_factory=lambda: Share(0, 0))
    resolved_in_time: Share = field(default_factory=lambda: Share(0, 0))
    accepted_still_open: int = 0
    decision_pending: int = 0  # no decision yet, still within the acceptance limit
    surveys_sent: int = 0
    surveys_answered: Share = field(default_factory=lambda: Share(0, 0))
    # of the surveys of a case still resolved or closed: sent within 72 h (PROCEDURE §7)
    surveys_in_time: Share = field(default_factory=lambda: Share(0, 0))
    scores: Counter[str] = field(default_factory=Counter)
    appeals: Share = field(default_factory=lambda: Share(0, 0))
    top_respondents: list[tuple[str, int]] = field(default_factory=list)

    @property
    def median_first_response(self) -> float | None:
        return percentile(self.first_response_hours, 50)

    @property
    def p90_first_response(self) -> float | None:
        return percentile(self.first_response_hours, 90)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (the median of [1, 2, 3, 4] is 2), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def period_bounds(
    config: Config, since: date | None, until: date | None
) -> tuple[datetime | None, datetime | None]:
    """[since 00:00, until+1 00:00) in the configured zone: local dates, both inclusive."""
    zone = config.timezone
    start = datetime.combine(since, time(0), zone) if since else None
    end = datetime.combine(until + timedelta(days=1), time(0), zone) if until else None
    return start, end


def compute(
    session: Session, config: Config, since: date | None, until: date | None, now: datetime
) -> Report:
    """Count the cases created in the period.

    The time limits are its priority's `[sla]` acceptance (from receipt) and resolution (from
    acceptance), counted on the `[sla]` working-day calendar and business hours as the SLA
    clocks are. A case still inside a limit at `now` (no decision yet, or not yet resolved) is
    neither a success nor a failure of that limit: it is counted apart, as pending.
    """
    start, end = period_bounds(config, since, until)
    query = select(Ticket).order_by(Ticket.id)
    if start is not None:
        query = query.where(Ticket.created_at >= start)
    if end is not None:
        query = query.where(Ticket.created_at < end)
    sla = config.sla
    calendar = WorkCalendar(sla.calendar, config.timezone, sla.business_hours)
    report = Report(since=since, until=until, zone=str(config.timezone.key), limits=Limits.of(sla))
    report.breakdowns = {name: Counter() for name in BREAKDOWNS}
    respondents: Counter[str] = Counter()
    accept_due = accepted = resolve_due = resolved = surveyed = answered = appealed = 0
    followed_up = in_time = 0
    for ticket in session.execute(query.execution_options(yield_per=1000)).scalars():
        report.total += 1
        b = report.breakdowns
        b["channel"][ticket.channel] += 1
        b["category"][ticket.category] += 1
        b["priority"][ticket.priority] += 1
        b["status"][ticket.status] += 1
        b["respondent"][ticket.respondent or NONE] += 1
        b["satisfaction"][ticket.satisfaction_outcome or NONE] += 1
        if ticket.respondent:
            respondents[ticket.respondent] += 1
        if ticket.first_response_at is not None:
            delta = ticket.first_response_at - ticket.created_at
            report.first_response_hours.append(delta.total_seconds() / 3600)
        # A rejected case was decided, not accepted; an imported one came in after its time.
        policy = sla.policy(ticket.priority)
        if ticket.status != "rejected" and not (ticket.extra or {}).get("imported"):
            deadline = calendar.add(ticket.created_at, policy.acceptance)
            if ticket.accepted_at is None and deadline > now:
                report.decision_pending += 1
            else:
                accept_due += 1
                if ticket.accepted_at is not None and ticket.accepted_at <= deadline:
                    accepted += 1
        if ticket.accepted_at is not None:
            done = ticket.resolved_at
            if done is None and ticket.status in OPEN:
                report.accepted_still_open += 1
            deadline = calendar.add(ticket.accepted_at, policy.resolution)
            if done is None and deadline > now:
                pass  # still within its limit: pending
            else:
                resolve_due += 1
                if done is not None and done <= deadline:
                    resolved += 1
        if ticket.survey_sent_at is not None:
            surveyed += 1
            if ticket.resolved_at is not None:  # the resolution the survey followed
                followed_up += 1
                if ticket.survey_sent_at - ticket.resolved_at <= FOLLOW_UP_WITHIN:
                    in_time += 1
            if ticket.satisfaction_outcome in ANSWERED:
                answered += 1
        if ticket.satisfaction_score is not None:
            report.scores[str(ticket.satisfaction_score)] += 1
        elif ticket.satisfaction_outcome in ANSWERED:
            report.scores["no score"] += 1
        if ticket.reopened_count > 0:
            appealed += 1
    report.accepted_in_time = Share(accepted, accept_due)
    report.resolved_in_time = Share(resolved, resolve_due)
    report.surveys_sent = surveyed
    report.surveys_answered = Share(answered, surveyed)
    report.surveys_in_time = Share(in_time, followed_up)
    report.appeals = Share(appealed, report.total)
    report.top_respondents = sorted(respondents.items(), key=lambda kv: (-kv[1], kv[0]))[
        :TOP_RESPONDENTS
    ]
    return report


def render(
    session: Session,
    config: Config,
    since: date | None,
    until: date | None,
    fmt: str,
    now: datetime,
) -> str:
    """The report for [since, until] (local dates, inclusive) as text, csv or html, with the
    time limits judged as of `now`."""
    report = compute(session, config, since, until, now)
    if fmt == "csv":
        return as_csv(report)
    if fmt == "html":
        return as_html(report)
    return as_text(report)


# --- the figures as rows: text and CSV print the same ----------------------------------


def _hours(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _period(report: Report) -> str:
    return f"{report.since or 'beginning'} .. {report.until or 'today'} ({report.zone})"


def summary_rows(report: Report) -> list[tuple[str, str, str]]:
    """(figure, value, share) for the headline numbers."""

    def pct(share: Share) -> str:
        return "" if share.percent is None else f"{share.percent:.1f}%"

    limits = report.limits
    return [
        ("cases", str(report.total), ""),
        ("cases with a first response", str(len(report.first_response_hours)), ""),
        ("first response median hours", _hours(report.median_first_response), ""),
        ("first response p90 hours", _hours(report.p90_first_response), ""),
        (
            f"accepted within {limits.acceptance}",
            str(report.accepted_in_time),
            pct(report.accepted_in_time),
        ),
        (
            f"resolved within {limits.resolution}",
            str(report.resolved_in_time),
            pct(report.resolved_in_time),
        ),
        (f"awaiting a decision, within {limits.acceptance}", str(report.decision_pending), ""),
        ("accepted, still open", str(report.accepted_still_open), ""),
        ("surveys sent", str(report.surveys_sent), ""),
        ("surveys answered", str(report.surveys_answered), pct(report.surveys_answered)),
        (
            "surveys sent within 72 h of the resolution",
            str(report.surveys_in_time),
            pct(report.surveys_in_time),
        ),
        ("appeals (reopened at least once)", str(report.appeals), pct(report.appeals)),
    ]


def breakdown_rows(report: Report, name: str) -> list[tuple[str, int]]:
    counts = report.breakdowns[name]
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def score_rows(report: Report) -> list[tuple[str, int]]:
    rows = [(str(s), report.scores.get(str(s), 0)) for s in range(5, 0, -1)]
    if report.scores.get("no score"):
        rows.append(("no score", report.scores["no score"]))
    return rows


def _pad(text: str, width: int) -> str:
    """Left-justify by display width: CJK characters take two columns in a terminal."""
    shown = sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
    return text + " " * max(0, width - shown)


def as_text(report: Report) -> str:
    out = [
        f"caseloop report: cases created {_period(report)}",
        f"time limits ([sla]): {report.limits.working_time}",
        "",
    ]
    width = max(len(r[0]) for r in summary_rows(report))
    out += [f"{figure:<{width}}  {value}" for figure, value, _ in summary_rows(report)]
    for name in BREAKDOWNS:
        out += ["", f"by {name}:"]
        rows = breakdown_rows(report, name)
        out += [f"  {_pad(key, 30)} {count:>7}" for key, count in rows]
        out.append(f"  {'total':<30} {sum(c for _, c in rows):>7}")
    out += ["", "survey scores (answered cases):"]
    out += [f"  {_pad(key, 30)} {count:>7}" for key, count in score_rows(report)]
    out += ["", f"top respondents (by cases, at most {TOP_RESPONDENTS}):"]
    out += [f"  {_pad(key, 30)} {count:>7}" for key, count in report.top_respondents] or ["  none"]
    return "\n".join(out) + "\n"


def as_csv(report: Report) -> str:
    """section,key,value,share: one flat table a spreadsheet opens; no cell runs as a formula."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def row(*cells: object) -> None:
        writer.writerow([spreadsheet_safe(c) for c in cells])

    row("section", "key", "value", "share")
    row("period", "since", report.since or "", "")
    row("period", "until", report.until or "", "")
    row("limits", "working time", report.limits.working_time, "")
    for figure, value, share in summary_rows(report):
        row("summary", figure, value, share)
    for name in BREAKDOWNS:
        rows = breakdown_rows(report, name)
        total = sum(c for _, c in rows)
        for key, count in rows:
            row(name, key, count, f"{100 * count / total:.1f}%" if total else "")
        row(name, "total", total, "100.0%" if total else "")
    for key, count in score_rows(report):
        row("score", key, count, "")
    for key, count in report.top_respondents:
        row("top_respondent", key, count, "")
    return buffer.getvalue()


# --- HTML with charts -------------------------------------------------------------------


def bar_chart(title: str, rows: list[tuple[str, int]]) -> str | None:
    """A horizontal bar chart as a data: URI (PNG), or None with nothing to draw."""
    if not rows or not any(count for _, count in rows):
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    labels = [charts.label(k) for k, _ in rows][::-1]
    values = [c for _, c in rows][::-1]
    buffer = io.BytesIO()
    with matplotlib.rc_context(charts.chart_style()):
        figure = Figure(figsize=(6, 0.4 * len(rows) + 1.0), dpi=80)
        axes = figure.subplots()
        axes.barh(labels, values, color="#4472c4")
        axes.set_title(title)
        for y, v in enumerate(values):
            axes.text(v, y, f" {v}", va="center")
        axes.set_xlim(0, max(values) * 1.15 + 1)
        figure.tight_layout()
        figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def as_html(report: Report) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(shipped_dir("templates") / "report")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    sections: list[dict[str, Any]] = []
    for name in BREAKDOWNS:
        rows = breakdown_rows(report, name)
        chart_rows = rows if name != "respondent" else rows[:TOP_RESPONDENTS]
        sections.append(
            {
                "name": name,
                "rows": rows,
                "total": sum(c for _, c in rows),
                "chart": bar_chart(f"cases by {name}", chart_rows),
            }
        )
    scores = score_rows(report)
    return env.get_template("report.html").render(
        report=report,
        period=_period(report),
        summary=summary_rows(report),
        sections=sections,
        scores=scores,
        scores_chart=bar_chart("survey scores", scores),
        top=report.top_respondents,
    )
