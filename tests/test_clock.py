"""Durations and the Chinese working-day calendar."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from daemon.clock import WorkCalendar, parse_duration, parse_size

SH = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("text", "amount", "unit", "working"),
    [
        ("24h", 24, "hours", False),
        ("3 working days", 3, "days", True),
        ("15 days", 15, "days", False),
        ("2 working hours", 2, "hours", True),
        ("30s", 30, "seconds", False),
        ("3 years", 3, "years", False),
    ],
)
def test_durations_parse(text: str, amount: float, unit: str, working: bool) -> None:
    d = parse_duration(text)
    assert (d.amount, d.unit, d.working) == (amount, unit, working)


@pytest.mark.parametrize("text", ["", "soon", "3 working weeks", "-1h", "0h", "3 fortnights"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_sizes() -> None:
    assert parse_size("25MB") == 25_000_000
    assert parse_size("1 MiB") == 1024 * 1024
    with pytest.raises(ValueError):
        parse_size("big")


def test_acceptance_counts_working_days_across_golden_week_and_makeup_saturday() -> None:
    cal = WorkCalendar("CN", SH)
    received = datetime(2026, 9, 30, 16, 0, tzinfo=SH)
    due = cal.add(received, parse_duration("3 working days")).astimezone(SH)
    # 1-7 October are off; Thu 8 and Fri 9 work, Sat 10 October is a make-up workday.
    assert due == datetime(2026, 10, 10, 16, 0, tzinfo=SH)


def test_calendar_days_ignore_holidays() -> None:
    cal = WorkCalendar("CN", SH)
    received = datetime(2026, 9, 30, 16, 0, tzinfo=SH)
    assert cal.add(received, parse_duration("3 days")).astimezone(SH).day == 3


def test_mail_on_a_holiday_starts_the_clock_on_the_next_working_day() -> None:
    cal = WorkCalendar("CN", SH)
    received = datetime(2027, 2, 7, 11, 0, tzinfo=SH)  # Spring Festival
    due = cal.add(received, parse_duration("1 working days")).astimezone(SH)
    # Off until Wed 10 February; the first working day, Thu 11, ends at midnight.
    assert due == datetime(2027, 2, 12, 0, 0, tzinfo=SH)
