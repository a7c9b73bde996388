"""One TOML table read key by key: typed values, unknown keys refused, errors naming the key."""

from __future__ import annotations

import re
from collections.abc import Callable
from email.utils import parseaddr
from pathlib import Path
from typing import Any, TypeVar

from daemon.clock import Duration, parse_duration
from daemon.settings import ConfigError

T = TypeVar("T")


class Reader:
    """Walks one TOML table, converting keys and refusing unknown ones."""

    def __init__(self, file: str, base: Path, table: dict[str, Any], prefix: str) -> None:
        self.file, self.base, self.table, self.prefix = file, base, table, prefix
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}" if self.prefix else name

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(self.file, self.key(name), problem)

    def get(self, name: str, kind: type[T] | tuple[type, ...], default: T) -> T:
        self.seen.add(name)
        if name not in self.table:
            return default
        value = self.table[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(name, f"expected {kind_name(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise self.fail(name, f"expected {kind_name(kinds)}, got {type(value).__name__}")
        return value  # type: ignore[return-value]

    def require(self, name: str, kind: type[T]) -> T:
        if name not in self.table:
            self.seen.add(name)
            raise self.fail(name, "missing (required)")
        value: T | None = self.get(name, kind, None)
        assert value is not None
        return value

    def convert(self, name: str, default: T, parse: Callable[[str], T]) -> T:
        raw = self.get(name, str, None)
        if raw is None:
            return default
        try:
            return parse(raw)
        except ValueError as exc:
            raise self.fail(name, str(exc)) from None

    def duration(self, name: str, default: Duration) -> Duration:
        return self.convert(name, default, parse_duration)

    def duration_or_off(self, name: str, default: Duration) -> Duration:
        """A duration, or "0s" (0 of anything): off."""
        raw = self.get(name, str, None)
        if raw is not None and re.fullmatch(r"\s*0+\s*[a-z ]*", raw.lower()):
            return Duration(0, "seconds")
        return self.duration(name, default)

    def path(self, name: str, default: Path | None) -> Path | None:
        raw = self.get(name, str, None)
        if raw is None:
            return default
        return (self.base / raw).resolve()

    def strings(self, name: str) -> tuple[str, ...]:
        values = self.get(name, list, [])
        if not all(isinstance(v, str) for v in values):
            raise self.fail(name, "expected a list of strings")
        return tuple(values)

    def choice(self, name: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(name, str, default)
        if value not in choices:
            raise self.fail(name, f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    def address(self, name: str, default: str | None = None) -> str:
        value = self.get(name, str, default) if default is not None else self.require(name, str)
        if not is_address(value):
            raise self.fail(name, f"not an email address: {value!r}")
        return value

    def addresses(self, name: str) -> tuple[str, ...]:
        values = self.strings(name)
        for value in values:
            if not is_address(value):
                raise self.fail(name, f"not an email address: {value!r}")
        return values

    def table_of(self, name: str) -> dict[str, Any]:
        return self.get(name, dict, {})

    def done(self) -> None:
        for name in self.table:
            if name not in self.seen:
                raise self.fail(name, "unknown key")


def kind_name(kinds: tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "a list",
        dict: "a table",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def is_address(value: str) -> bool:
    _, addr = parseaddr(value)
    return bool(addr) and addr == value.strip() and "@" in addr and " " not in addr
