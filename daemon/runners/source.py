"""What a runner needs of a source: fetch a batch, settle it after commit, say how it is."""

from __future__ import annotations

from typing import Protocol, TypeGuard

from daemon.items import Incoming


class Source(Protocol):
    name: str

    def fetch(self, limit: int) -> list[Incoming]: ...
    def settle_batch(self, settled: list[tuple[Incoming, str]]) -> None: ...
    def describe(self) -> str: ...
    def check(self) -> str: ...
    def backlog(self) -> int: ...


class PeekableSource(Source, Protocol):
    """A mailbox `caseloop import` can read on through without taking (a dry run)."""

    def peek(self, limit: int, after: str | None) -> list[Incoming]: ...


class WaitingSource(Source, Protocol):
    """A source that can block until the server announces mail (IMAP IDLE): it gets a thread."""

    def wait_for_mail(self, timeout: float) -> bool: ...
    def wake(self) -> None: ...
    def close(self) -> None: ...


def peekable(source: Source) -> TypeGuard[PeekableSource]:
    return hasattr(source, "peek")


def waits(source: Source) -> TypeGuard[WaitingSource]:
    return hasattr(source, "wait_for_mail")
