"""The one source of "now", typed durations, and the working-day calendar."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

import holidays


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    @property
    def shared_with_children(self) -> bool:
        """A child process (run --once's delivery) reads the same time from a clock of its own."""
        ...


class SystemClock:
    shared_with_children = True

    def now(self) -> datetime:
        return datetime.now(UTC)


class MovableClock:
    """A clock tests set and move; nothing sleeps to wait for an SLA."""

    shared_with_children = False  # moved in this process only: a child would not see it

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("MovableClock needs an aware datetime")
        self._now = start.astimezone(UTC)

    def now(self) -> datetime:
        return self._now

    def move(self, delta: timedelta) -> None:
        self._now += delta

    def set(self, when: datetime) -> None:
        self._now = when.astimezone(UTC)


_UNITS = {
    "s": "seconds",
    "sec": "seconds",
    "second": "seconds",
    "seconds": "seconds",
    "m": "minutes",
    "min": "minutes",
    "minute": "minutes",
    "minutes": "minutes",
    "h": "hours",
    "hour": "hours",
    "hours": "hours",
    "d": "days",
    "day": "days",
    "days": "days",
    "w": "weeks",
    "week": "weeks",
    "weeks": "weeks",
    "y": "years",
    "year": "years",
    "years": "years",
}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(working\s+)?([a-z]+)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Duration:
    """A configured duration: calendar time, or working hours/days on the SLA calendar."""

    amount: float
    unit: str  # seconds | minutes | hours | days | weeks | years
    working: bool = False

    def as_timedelta(self) -> timedelta:
        """The calendar length; for working durations use WorkCalendar.add instead."""
        if self.unit == "years":
            return timedelta(days=365 * self.amount)
        return timedelta(**{self.unit: self.amount})

    def __str__(self) -> str:
        amount = int(self.amount) if self.amount == int(self.amount) else self.amount
        return f"{amount} {'working ' if self.working else ''}{self.unit}"


def in_window(when: datetime, hours: tuple[time, time], zone: ZoneInfo) -> datetime:
    """The same moment when it falls in the daily window `hours` (local time in `zone`; a
    window may run across midnight, e.g. 20:00-08:00), else the start of the next window."""
    start, end = hours
    local = when.astimezone(zone)
    if start <= end:
        if start <= local.time() < end:
            return when
        day = local.date() if local.time() < start else local.date() + timedelta(days=1)
    else:
        if local.time() >= start or local.time() < end:
            return when
        day = local.date()
    return datetime.combine(day, start, zone).astimezone(when.tzinfo)


def window_before(
    when: datetime, hours: tuple[time, time], zone: ZoneInfo
) -> tuple[datetime, datetime]:
    """(opened, closed) of the daily window `hours` that last opened at or before `when`
    (local time in `zone`); when `when` is in a window, that window."""
    start, end = hours
    local = when.astimezone(zone)
    day = local.date()
    if start <= end:
        if local.time() < start:
            day -= timedelta(days=1)
        opened, closed = datetime.combine(day, start, zone), datetime.combine(day, end, zone)
    else:
        if local.time() < start:
            day -= timedelta(days=1)
        opened = datetime.combine(day, start, zone)
        closed = datetime.combine(day + timedelta(days=1), end, zone)
    return opened.astimezone(when.tzinfo), closed.astimezone(when.tzinfo)


def parse_duration(text: str) -> Duration:
    """Parse "24h", "3 working days", "15 days"; raise ValueError saying what is wrong."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f'bad duration {text!r} (expected e.g. "24h", "3 working days")')
    amount, working, unit_word = match.groups()
    unit = _UNITS.get(unit_word.lower())
    if unit is None:
        raise ValueError(f"bad duration {text!r}: unknown unit {unit_word!r}")
    if working and unit not in ("hours", "days"):
        raise ValueError(f"bad duration {text!r}: only hours and days can be working time")
    if float(amount) <= 0:
        raise ValueError(f"bad duration {text!r}: must be positive")
    return Duration(float(amount), unit, bool(working))


class WorkCalendar:
    """Working time of one country: public holidays off, make-up weekend workdays (调休) on,
    and optionally only the business hours of each working day."""

    def __init__(
        self, country: str, zone: ZoneInfo, business_hours: tuple[time, time] | None = None
    ) -> None:
        self.zone = zone
        self.business_hours = business_hours
        self._holidays = holidays.country_holidays(country)

    def is_working_day(self, day: date) -> bool:
        return bool(self._holidays.is_working_day(day))

    @property
    def day_length(self) -> timedelta:
        """The working time of one working day: its business hours, or all of it."""
        if self.business_hours is None:
            return timedelta(days=1)
        start, end = self.business_hours
        return datetime.combine(date.min, end) - datetime.combine(date.min, start)

    def _window(self, day: date) -> tuple[datetime, datetime] | None:
        """The working interval of a local day, or None on a day off."""
        if not self.is_working_day(day):
            return None
        if self.business_hours is None:
            return (
                datetime.combine(day, time(0), self.zone),
                datetime.combine(day + timedelta(days=1), time(0), self.zone),
            )
        start, end = self.business_hours
        return datetime.combine(day, start, self.zone), datetime.combine(day, end, self.zone)

    def working_length(self, duration: Duration) -> timedelta:
        """A working duration as working time ("3 working days" = 3 working days' hours)."""
        if duration.unit == "days":
            return self.day_length * duration.amount
        return timedelta(hours=duration.amount)

    def add(self, start: datetime, duration: Duration) -> datetime:
        """The moment `duration` after `start`, counting only working time when it says so.

        Without business hours a working day is a whole day: "3 working days" from Wednesday
        16:00 ends at 16:00 on the third working day after it; from a day off, at the end of
        the third working day. With business hours it is that many days' business hours.
        """
        if not duration.working:
            return start + duration.as_timedelta()
        return self.add_working(start, self.working_length(duration))

    def subtract(self, end: datetime, duration: Duration) -> datetime:
        """The moment `duration` before `end` (working time when it says so)."""
        if not duration.working:
            return end - duration.as_timedelta()
        return self.add_working(end, -self.working_length(duration))

    def add_working(self, start: datetime, amount: timedelta) -> datetime:
        """`start` moved by `amount` of working time (backwards when negative), in UTC."""
        cursor = start.astimezone(self.zone)
        remaining = abs(amount)
        forward = amount >= timedelta(0)
        day = cursor.date()
        for _ in range(3660):  # ten years of days: a bound, never reached by real durations
            window = self._window(day)
            if window is not None:
                lo, hi = window
                if forward and cursor < hi:
                    begin = max(cursor, lo)
                    if remaining <= hi - begin:
                        return (begin + remaining).astimezone(UTC)
                    remaining -= hi - begin
                elif not forward and cursor > lo:
                    finish = min(cursor, hi)
                    if remaining <= finish - lo:
                        return (finish - remaining).astimezone(UTC)
                    remaining -= finish - lo
            day += timedelta(days=1 if forward else -1)
            cursor = datetime.combine(
                day if forward else day + timedelta(days=1), time(0), self.zone
            )
        raise ValueError(f"no working time found within ten years of {start.isoformat()}")

    def working_between(self, start: datetime, end: datetime) -> timedelta:
        """How much working time lies between two moments (zero when end <= start)."""
        total = timedelta(0)
        lo_local, hi_local = start.astimezone(self.zone), end.astimezone(self.zone)
        day = lo_local.date()
        while day <= hi_local.date():
            window = self._window(day)
            if window is not None:
                begin, finish = max(window[0], lo_local), min(window[1], hi_local)
                if finish > begin:
                    total += finish - begin
            day += timedelta(days=1)
        return total

    def next_send_time(self, moment: datetime, default_hours: tuple[time, time]) -> datetime:
        """The first moment at or after `moment` a person may be mailed about work (LESSONS 10).

        Inside the business hours of a working day, or `default_hours` when none are set:
        a reminder due at midnight or on a holiday waits for the next working morning.
        """
        start, end = self.business_hours or default_hours
        local = moment.astimezone(self.zone)
        day = local.date()
        for _ in range(3660):
            if self.is_working_day(day):
                lo = datetime.combine(day, start, self.zone)
                hi = datetime.combine(day, end, self.zone)
                if local < hi:
                    return max(local, lo).astimezone(UTC)
            day += timedelta(days=1)
        raise ValueError(f"no working day found within ten years of {moment.isoformat()}")


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$", re.IGNORECASE)
_SIZE_FACTORS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_size(text: str) -> int:
    """Parse "25MB" into bytes; raise ValueError saying what is wrong."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f'bad size {text!r} (expected e.g. "25MB")')
    number, unit = match.groups()
    return int(float(number) * _SIZE_FACTORS[(unit or "b").lower()])
