"""Durations and the Chinese working-day calendar."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
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


# -- the SLA calendar: the official 2026 schedule, Spring Festival 2027, business hours --------

BUSINESS = (time(9), time(18))


def test_makeup_workdays_of_2026_golden_week_are_working_days() -> None:
    cal = WorkCalendar("CN", SH)
    assert cal.is_working_day(date(2026, 9, 20))  # Sunday, worked for National Day
    assert cal.is_working_day(date(2026, 10, 10))  # Saturday, worked for National Day
    assert not any(cal.is_working_day(date(2026, 10, d)) for d in range(1, 8))
    assert cal.is_working_day(date(2026, 10, 8))


def test_working_hours_skip_nights_weekends_and_spring_festival() -> None:
    cal = WorkCalendar("CN", SH, BUSINESS)
    eve = datetime(2027, 2, 4, 17, 0, tzinfo=SH)  # Thursday before the Spring Festival
    due = cal.add(eve, parse_duration("2 working hours")).astimezone(SH)
    # Off 5-10 February 2027; Thursday 11 opens at 09:00.
    assert due == datetime(2027, 2, 11, 10, 0, tzinfo=SH)
    assert cal.subtract(due, parse_duration("2 working hours")) == eve


def test_working_days_with_business_hours_count_whole_business_days() -> None:
    cal = WorkCalendar("CN", SH, BUSINESS)
    evening = datetime(2026, 9, 30, 20, 0, tzinfo=SH)  # after hours, before Golden Week
    due = cal.add(evening, parse_duration("3 working days")).astimezone(SH)
    assert due == datetime(2026, 10, 10, 18, 0, tzinfo=SH)  # end of the make-up Saturday
    received = datetime(2026, 9, 30, 16, 0, tzinfo=SH)
    assert cal.add(received, parse_duration("3 working days")).astimezone(SH) == datetime(
        2026, 10, 10, 16, 0, tzinfo=SH
    )


def test_working_time_between_excludes_golden_week() -> None:
    cal = WorkCalendar("CN", SH)
    start = datetime(2026, 9, 30, 12, 0, tzinfo=SH)
    end = datetime(2026, 10, 8, 12, 0, tzinfo=SH)
    assert cal.working_between(start, end) == timedelta(hours=24)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 11, 24, 10, 0), datetime(2026, 11, 24, 10, 0)),  # Tuesday morning
        (datetime(2026, 11, 24, 0, 30), datetime(2026, 11, 24, 9, 0)),  # midnight
        (datetime(2026, 11, 27, 19, 0), datetime(2026, 11, 30, 9, 0)),  # Friday evening
        (datetime(2026, 10, 3, 11, 0), datetime(2026, 10, 8, 9, 0)),  # Golden Week
        (datetime(2026, 10, 9, 20, 0), datetime(2026, 10, 10, 9, 0)),  # make-up Saturday
        (datetime(2027, 2, 6, 9, 0), datetime(2027, 2, 11, 9, 0)),  # Spring Festival
    ],
)
def test_people_are_mailed_in_working_hours_only(moment: datetime, expected: datetime) -> None:
    cal = WorkCalendar("CN", SH)
    sent = cal.next_send_time(moment.replace(tzinfo=SH), BUSINESS).astimezone(SH)
    assert sent == expected.replace(tzinfo=SH)
