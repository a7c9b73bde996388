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


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class MovableClock:
    """A clock tests set and move; nothing sleeps to wait for an SLA."""

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
    """Working days of one country (public holidays off, make-up weekend workdays on)."""

    def __init__(self, country: str, zone: ZoneInfo) -> None:
        self.zone = zone
        self._holidays = holidays.country_holidays(country)

    def is_working_day(self, day: date) -> bool:
        return bool(self._holidays.is_working_day(day))

    def add(self, start: datetime, duration: Duration) -> datetime:
        """The moment `duration` after `start`, counting only working time when it says so."""
        if not duration.working:
            return start + duration.as_timedelta()
        local = start.astimezone(self.zone)
        if duration.unit == "days":
            return self._add_working_days(local, duration.amount).astimezone(UTC)
        return self._add_working_hours(local, timedelta(hours=duration.amount)).astimezone(UTC)

    def _add_working_days(self, local: datetime, amount: float) -> datetime:
        whole = int(amount)
        day = local.date()
        at = local.timetz() if self.is_working_day(day) else time(0, tzinfo=None)
        counted = 0
        while counted < whole:
            day += timedelta(days=1)
            if self.is_working_day(day):
                counted += 1
        if not self.is_working_day(local.date()):
            # Received on a day off: the clock starts with the next working day, so the
            # deadline is the end of the n-th working day.
            end = datetime.combine(day + timedelta(days=1), time(0), self.zone)
        else:
            end = datetime.combine(day, at.replace(tzinfo=None), self.zone)
        fraction = amount - whole
        if fraction:
            end = self._add_working_hours(end, timedelta(days=fraction))
        return end

    def _add_working_hours(self, local: datetime, remaining: timedelta) -> datetime:
        cursor = local
        while remaining > timedelta(0):
            next_midnight = datetime.combine(cursor.date() + timedelta(days=1), time(0), self.zone)
            if not self.is_working_day(cursor.date()):
                cursor = next_midnight
                continue
            step = min(remaining, next_midnight - cursor)
            cursor += step
            remaining -= step
        return cursor


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
