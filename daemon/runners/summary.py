"""What a run did, for the operator: counts by outcome, cases opened, items set aside, notes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Summary:
    """What a run did, for the operator: counts by outcome, the cases opened, the items set
    aside and the notes. Lists keep their first DETAILS entries, so a run over a 200,000-row
    export does not hold (or print) one line per row; `left_out` counts the rest, and every
    item set aside and every note is in the log as it happens."""

    DETAILS = 50

    outcomes: Counter[str] = field(default_factory=Counter)
    set_aside: list[tuple[str, str, str, str]] = field(default_factory=list)  # src, item, how, why
    opened: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    left_out: Counter[str] = field(default_factory=Counter)  # "set_aside", "opened", "notes"
    sent: int = 0
    not_sent: int = 0
    swept: int = 0  # clock steps taken: reminders, escalations, surveys, digests

    def keep(self, kind: str, entries: list[Any]) -> None:
        """Add entries to the list `kind`, up to DETAILS; count the ones left out."""
        kept: list[Any] = getattr(self, kind)
        room = max(0, self.DETAILS - len(kept))
        kept += entries[:room]
        self.left_out[kind] += len(entries) - len(entries[:room])

    def add(self, other: Summary) -> None:
        self.outcomes.update(other.outcomes)
        for kind in ("set_aside", "opened", "notes"):
            self.keep(kind, getattr(other, kind))
        self.left_out.update(other.left_out)
        self.sent += other.sent
        self.not_sent += other.not_sent
        self.swept += other.swept

    @property
    def work_done(self) -> int:
        return sum(self.outcomes.values()) + self.sent + self.swept
