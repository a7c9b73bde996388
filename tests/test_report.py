"""`caseloop report`: figures checked against a known set of cases and a generated month."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import re
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_caseloop

from daemon import config as configmod
from daemon.app import App
from daemon.clock import MovableClock
from daemon.store.models import Ticket
from handlers import report

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Tuesday 10:00 in Shanghai
SINCE, UNTIL = date(2026, 11, 24), date(2026, 11, 30)
AS_OF = T0 + timedelta(days=60)  # every time limit of the known set has run out by then
INJECTION = '=HYPERLINK("http://evil.example","<b>click</b>")'
ROOT = Path(__file__).parent.parent


def add(session: Any, n: int, created: datetime, **fields: Any) -> None:
    values: dict[str, Any] = dict(
        number=f"TS-{created:%Y%m%d}-{n:04d}",
        status="received",
        channel="email",
        category="other",
        priority="normal",
        language="zh-CN",
        subject=f"case {n}",
        complainant_email=f"c{n}@example.cn",
        source="t",
        reply_token=f"{n:016x}",
        created_at=created,
        updated_at=created,
        extra={},
    )
    values.update(fields)
    session.add(Ticket(**values))


def known_cases(app: App) -> None:
    h, d = timedelta(hours=1), timedelta(days=1)
    with app.sessions.begin() as s:
        # A: answered 5, on time everywhere
        add(
            s,
            1,
            T0,
            category="product_quality",
            respondent="甲电器公司",
            status="closed",
            first_response_at=T0 + 2 * h,
            accepted_at=T0 + d,
            resolved_at=T0 + 5 * d,
            closed_at=T0 + 9 * d,
            survey_sent_at=T0 + 8 * d,
            satisfaction_score=5,
            satisfaction_outcome="satisfied",
        )
        # B: accepted on the 4th working day, resolved 20 days after; survey unanswered
        add(
            s,
            2,
            T0,
            channel="email",
            category="logistics",
            priority="high",
            respondent="甲电器公司",
            status="closed",
            first_response_at=T0 + 10 * h,
            accepted_at=T0 + 6 * d,
            resolved_at=T0 + 26 * d,
            closed_at=T0 + 36 * d,
            survey_sent_at=T0 + 29 * d,
            satisfaction_outcome="no_answer",
        )
        # C: a form case with a formula for a respondent, appealed, in progress again
        add(
            s,
            3,
            T0 + h,
            channel="form",
            category="price",
            respondent=INJECTION,
            status="in_progress",
            first_response_at=T0 + 31 * h,
            accepted_at=T0 + 2 * d,
            reopened_count=1,
            survey_sent_at=T0 + 8 * d,
            satisfaction_score=1,
            satisfaction_outcome="dissatisfied",
        )
        # D: rejected
        add(s, 4, T0 + 2 * h, priority="low", status="rejected")
        # E: urgent, untouched, three days later
        add(s, 5, T0 + 3 * d, category="product_quality", priority="urgent")
        # G: the last minutes of the last day count (local dates, inclusive)
        last = datetime(2026, 11, 30, 23, 30, tzinfo=app.config.timezone)
        add(s, 6, last)
        # outside the period: before it, and the first minutes after it
        add(s, 7, T0 - 10 * d, category="logistics")
        add(s, 8, last + timedelta(minutes=40), category="logistics")


@pytest.fixture
def app(make_app) -> App:
    app: App = make_app()
    known_cases(app)
    return app


def test_figures_of_a_known_set_of_cases(app: App) -> None:
    with app.sessions() as session:
        r = report.compute(session, app.config, SINCE, UNTIL, AS_OF)
    assert r.total == 6
    b = r.breakdowns
    assert b["channel"] == {"email": 5, "form": 1}
    assert b["category"] == {"product_quality": 2, "logistics": 1, "price": 1, "other": 2}
    assert b["priority"] == {"normal": 3, "high": 1, "low": 1, "urgent": 1}
    assert b["status"] == {"closed": 2, "in_progress": 1, "rejected": 1, "received": 2}
    assert b["respondent"] == {"甲电器公司": 2, INJECTION: 1, "(none)": 3}
    assert b["satisfaction"] == {
        "satisfied": 1,
        "no_answer": 1,
        "dissatisfied": 1,
        "(none)": 3,
    }
    for counts in b.values():  # every case counted once in each breakdown
        assert sum(counts.values()) == r.total
    assert sorted(r.first_response_hours) == [2.0, 10.0, 30.0]
    assert (r.median_first_response, r.p90_first_response) == (10.0, 30.0)
    assert (r.accepted_in_time.part, r.accepted_in_time.whole) == (2, 5)  # A, C of all but D
    assert (r.resolved_in_time.part, r.resolved_in_time.whole) == (1, 3)  # A of A, B, C
    assert r.accepted_still_open == 1  # C
    assert r.surveys_sent == 3
    assert (r.surveys_answered.part, r.surveys_answered.whole) == (2, 3)
    assert (r.surveys_in_time.part, r.surveys_in_time.whole) == (2, 2)  # A, B at 72 h; C reopened
    assert r.scores == {"5": 1, "1": 1}
    assert (r.appeals.part, r.appeals.whole) == (1, 6)
    assert r.top_respondents == [("甲电器公司", 2), (INJECTION, 1)]


def test_the_report_shows_the_share_of_follow_ups_within_72_hours(make_app) -> None:
    app: App = make_app()
    h = timedelta(hours=1)
    with app.sessions.begin() as s:
        for n, after in ((1, 24 * h), (2, 72 * h), (3, 73 * h)):
            add(s, n, T0, status="resolved", resolved_at=T0 + h, survey_sent_at=T0 + h + after)
        add(s, 4, T0, status="resolved", resolved_at=T0 + h)  # not yet followed up
    with app.sessions() as session:
        text = report.render(session, app.config, SINCE, UNTIL, "text", AS_OF)
    assert re.search(r"surveys sent within 72 h of the resolution\s+2 of 3 \(66\.7%\)", text)


def test_open_ended_period_counts_everything(app: App) -> None:
    with app.sessions() as session:
        assert report.compute(session, app.config, None, None, AS_OF).total == 8
        assert report.compute(session, app.config, SINCE, None, AS_OF).total == 7
        assert report.compute(session, app.config, None, SINCE, AS_OF).total == 5


def test_percentile_is_nearest_rank() -> None:
    assert report.percentile([], 50) is None
    assert report.percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.0
    assert report.percentile([float(i) for i in range(1, 11)], 90) == 9.0


def test_text_report_shows_the_figures(app: App) -> None:
    with app.sessions() as session:
        text = report.render(session, app.config, SINCE, UNTIL, "text", AS_OF)
    assert "2026-11-24 .. 2026-11-30" in text
    assert re.search(r"accepted within 3 working days\s+2 of 5 \(40\.0%\)", text)
    assert re.search(r"appeals \(reopened at least once\)\s+1 of 6", text)
    assert re.search(r"first response median hours\s+10\.0", text)


def test_csv_is_safe_against_formula_injection_and_reconciles(app: App) -> None:
    with app.sessions() as session:
        text = report.render(session, app.config, SINCE, UNTIL, "csv", AS_OF)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["section", "key", "value", "share"]
    for row in rows:
        for cell in row:
            assert cell[:1] not in ("=", "+", "-", "@"), row
    assert ["respondent", "'" + INJECTION, "1", "16.7%"] in rows
    assert ["top_respondent", "'" + INJECTION, "1", ""] in rows
    for name in report.BREAKDOWNS:
        counts = [int(r[2]) for r in rows if r[0] == name and r[1] != "total"]
        [total] = [int(r[2]) for r in rows if r[0] == name and r[1] == "total"]
        assert sum(counts) == total == 6


class Cells(HTMLParser):
    """Collects the report's data-* cells and every <img> source."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[tuple[dict[str, str | None], str]] = []
        self.images: list[str] = []
        self._open: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        data = dict(attrs)
        if tag == "img":
            self.images.append(data.get("src") or "")
        if tag == "td" and any(k.startswith("data-") for k in data):
            self._open = data

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self.cells.append((self._open, data.strip()))
            self._open = None

    def breakdown(self, name: str) -> dict[str, int]:
        return {
            str(a["data-key"]): int(v)
            for a, v in self.cells
            if a.get("data-breakdown") == name and "data-key" in a
        }

    def total(self, name: str) -> int:
        [value] = [
            int(v) for a, v in self.cells if a.get("data-breakdown") == name and "data-total" in a
        ]
        return value

    def figure(self, name: str) -> str:
        [value] = [v for a, v in self.cells if a.get("data-figure") == name]
        return value


def test_html_is_escaped_and_has_charts(app: App) -> None:
    with app.sessions() as session:
        html = report.render(session, app.config, SINCE, UNTIL, "html", AS_OF)
    assert "<b>click</b>" not in html and "&lt;b&gt;click&lt;/b&gt;" in html
    parser = Cells()
    parser.feed(html)
    assert parser.images and all(i.startswith("data:image/png;base64,") for i in parser.images)
    assert parser.breakdown("status") == {
        "closed": 2,
        "in_progress": 1,
        "rejected": 1,
        "received": 2,
    }
    assert parser.total("respondent") == 6
    assert parser.figure("surveys answered") == "2 of 3 (66.7%)"


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("report_month", ROOT / "bench/report_month.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_html_report_of_a_generated_month_reconciles_with_tickets_list(tmp_path: Path) -> None:
    month = _generator()
    config = configmod.load(month.site_config(tmp_path))
    clock = MovableClock(month.START)
    app = App(config, clock=clock)
    try:
        opened = month.generate(app, clock, days=30, per_day=3, seed=11)
    finally:
        app.close()
    conf = str(tmp_path / "caseloop.toml")
    cases = json.loads(
        run_caseloop(
            "--config", conf, "tickets", "list", "--json", "--limit", "100000", cwd=tmp_path
        ).stdout
    )
    html = run_caseloop("--config", conf, "report", "--format", "html", cwd=tmp_path).stdout
    assert len(cases) == opened > 50
    parser = Cells()
    parser.feed(html)
    assert parser.figure("cases") == str(len(cases))
    for name, field in (
        ("channel", "channel"),
        ("category", "category"),
        ("priority", "priority"),
        ("status", "status"),
        ("respondent", "respondent"),
    ):
        expected = Counter(c[field] or "(none)" for c in cases)
        assert parser.breakdown(name) == expected, name
        assert parser.total(name) == len(cases)
    statuses = Counter(c["status"] for c in cases)
    assert len(statuses) >= 4  # the month moved cases along
    appealed = sum(1 for c in cases if c["reopened_count"] > 0)
    assert parser.figure("appeals (reopened at least once)").startswith(
        f"{appealed} of {len(cases)}"
    )
    assert appealed > 0
    scores = Counter(str(c["satisfaction"]["score"]) for c in cases if c["satisfaction"]["score"])
    shown = {str(a["data-score"]): int(v) for a, v in parser.cells if "data-score" in a}
    assert {k: v for k, v in shown.items() if v} == scores
    hours = sorted(
        (
            datetime.fromisoformat(c["first_response_at"]) - datetime.fromisoformat(c["created_at"])
        ).total_seconds()
        / 3600
        for c in cases
        if c["first_response_at"]
    )
    median = hours[max(1, math.ceil(0.5 * len(hours))) - 1]
    assert parser.figure("first response median hours") == f"{median:.1f}"
    # and the same month as text and CSV gives the same totals
    text = run_caseloop("--config", conf, "report", cwd=tmp_path).stdout
    assert re.search(rf"^cases\s+{len(cases)}$", text, re.M)


def test_a_case_still_within_its_limit_is_pending_not_late(make_app) -> None:
    """No decision yet one working day in: pending. Ten days in: late."""
    app: App = make_app()
    with app.sessions.begin() as s:
        add(s, 1, T0)
    with app.sessions() as session:
        early = report.compute(session, app.config, None, None, T0 + timedelta(days=1))
        late = report.compute(session, app.config, None, None, T0 + timedelta(days=10))
    assert (early.decision_pending, early.accepted_in_time.whole) == (1, 0)
    assert (late.decision_pending, late.accepted_in_time.whole) == (0, 1)
    assert late.accepted_in_time.part == 0


def test_the_limits_come_from_the_sla_section_and_the_report_names_them(make_app) -> None:
    """B (accepted on the 4th working day, resolved 20 days later) is in time for a
    7-working-day acceptance and a 30-day resolution; C, still open, is late either way."""
    app: App = make_app('[sla]\nacceptance = "7 working days"\nresolution = "30 days"\n')
    known_cases(app)
    with app.sessions() as session:
        r = report.compute(session, app.config, SINCE, UNTIL, AS_OF)
        text = report.render(session, app.config, SINCE, UNTIL, "text", AS_OF)
        csv_text = report.render(session, app.config, SINCE, UNTIL, "csv", AS_OF)
        html = report.render(session, app.config, SINCE, UNTIL, "html", AS_OF)
    assert (r.accepted_in_time.part, r.accepted_in_time.whole) == (3, 5)  # A, B, C
    assert (r.resolved_in_time.part, r.resolved_in_time.whole) == (2, 3)  # A, B of A, B, C
    assert re.search(r"accepted within 7 working days\s+3 of 5 \(60\.0%\)", text)
    assert re.search(r"resolved within 30 days of acceptance\s+2 of 3", text)
    assert "awaiting a decision, within 7 working days" in text
    assert "3 working days" not in text and "15 days" not in text
    assert "working days on the CN holiday calendar, counted all day" in text
    assert ["summary", "accepted within 7 working days", "3 of 5 (60.0%)", "60.0%"] in list(
        csv.reader(io.StringIO(csv_text))
    )
    parser = Cells()
    parser.feed(html)
    assert parser.figure("resolved within 30 days of acceptance") == "2 of 3 (66.7%)"


def test_each_priority_is_judged_by_its_own_limit(make_app) -> None:
    """B is a high-priority case: with 5 working days for high, its 4th-day acceptance counts."""
    app: App = make_app('[sla.high]\nacceptance = "5 working days"\n')
    known_cases(app)
    with app.sessions() as session:
        r = report.compute(session, app.config, SINCE, UNTIL, AS_OF)
        text = report.render(session, app.config, SINCE, UNTIL, "text", AS_OF)
    assert (r.accepted_in_time.part, r.accepted_in_time.whole) == (3, 5)
    assert "accepted within 3 working days (high: 5 working days)" in text
    assert "resolved within 15 days of acceptance" in text


@pytest.mark.parametrize(("hours", "in_time"), [("", 0), ('business_hours = "09:00-18:00"\n', 1)])
def test_working_time_counts_only_the_configured_business_hours(
    make_app, hours: str, in_time: int
) -> None:
    """Received Tuesday 16:00, accepted Wednesday 10:00: four working hours run out on Tuesday
    20:00 all day long, but on Wednesday 11:00 with business hours 09:00-18:00."""
    app: App = make_app(f'[sla]\nacceptance = "4 working hours"\n{hours}')
    received = T0 + timedelta(hours=6)  # Tuesday 16:00 in Shanghai
    with app.sessions.begin() as s:
        add(s, 1, received, status="accepted", accepted_at=received + timedelta(hours=18))
    with app.sessions() as session:
        r = report.compute(session, app.config, None, None, AS_OF)
        text = report.render(session, app.config, None, None, "text", AS_OF)
    assert (r.accepted_in_time.part, r.accepted_in_time.whole) == (in_time, 1)
    assert "accepted within 4 working hours" in text
    counted = "counted 09:00-18:00" if hours else "counted all day"
    assert f"time limits ([sla]): working days on the CN holiday calendar, {counted}" in text


MATH_NAMES = ("$x^{$", "{{{" + "a" * 40 + "}}}", r"$\frac{1}{0}$ shop")


def test_respondents_named_like_markup_are_drawn_as_text(tmp_path: Path) -> None:
    """Chart labels are never mathtext: `$x^{$` made matplotlib raise and the report exit 1."""
    conf = tmp_path / "caseloop.toml"
    conf.write_text('data_dir = "caseloop-data"\n', encoding="utf-8")
    app = App(configmod.load(conf), clock=MovableClock(AS_OF))
    try:
        with app.sessions.begin() as s:
            for n, name in enumerate(MATH_NAMES, start=1):
                add(s, n, T0, respondent=name)
    finally:
        app.close()
    since = ("--since", SINCE.isoformat(), "--until", UNTIL.isoformat())
    done = run_caseloop("--config", str(conf), "report", *since, "--format", "html", cwd=tmp_path)
    parser = Cells()
    parser.feed(done.stdout)
    assert parser.breakdown("respondent") == dict.fromkeys(MATH_NAMES, 1)
    assert parser.images  # the charts were drawn
