"""Case numbers on PostgreSQL: reserved a block at a time, outside the batch's transaction.

A counter row bumped inside a batch's transaction stays locked until that transaction ends,
so a second instance's batch waits at its first new case for the whole of the first one's:
several instances then take mail in one after the other. Here the counter is bumped in a short
transaction of its own on another connection (committed at once), by as many numbers as the
last transaction of this process took, and the numbers are handed out from memory:

- the same number never goes to two cases (the row is bumped atomically; a block is ours);
- a transaction or savepoint that rolls back gives its numbers back, and the next case takes
  the smallest free one (as when the counter row itself rolled back);
- numbers reserved and not used are given back at commit when nobody bumped the counter since
  (compare-and-set); otherwise they stay free in this process for its next cases. Numbers a
  process held when it stopped are skipped: numbers stay unique, not always gapless.

SQLite is single-instance: there the counter is bumped inside the transaction (writes.py).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from datetime import date

from sqlalchemy import Connection, Engine
from sqlalchemy.pool import Pool

_MAX_BLOCK = 1000

Reserve = Callable[[Connection, int], int]  # bump by n, committed; the counter's new value
GiveBack = Callable[[Connection, int, int], bool]  # value top -> low - 1 if still top


class NumberPool:
    """The numbers of one counter (database, prefix, day) this process reserved, not used."""

    def __init__(self, engine: Engine, reserve: Reserve, give_back: GiveBack) -> None:
        self.engine, self._reserve, self._give_back = engine, reserve, give_back
        self.free: list[int] = []  # ascending
        self.top = 0  # the counter's value right after our last reservation
        self.demand = 1  # how many the last transaction that took any took
        self.lock = threading.Lock()

    def take(self, taken_before: int) -> int:
        """The smallest free number, reserving a block first when none is free;
        `taken_before`: how many this transaction took already (it sizes the block)."""
        with self.lock:
            if not self.free:
                size = min(_MAX_BLOCK, max(1, self.demand - taken_before, taken_before))
                with self.engine.connect() as conn:
                    top = self._reserve(conn.execution_options(isolation_level="AUTOCOMMIT"), size)
                self.free = list(range(top - size + 1, top + 1))
                self.top = top
            return self.free.pop(0)

    def restore(self, numbers: list[int]) -> None:
        """Numbers of a rolled-back transaction or savepoint: free again."""
        with self.lock:
            self.free = sorted(self.free + numbers)

    def settle(self, took: int) -> None:
        """A transaction that took `took` numbers commits: give back what is left unused
        at the top of the counter, if nobody bumped it since."""
        with self.lock:
            self.demand = max(1, took)
            tail = 0
            while tail < len(self.free) and self.free[-1 - tail] == self.top - tail:
                tail += 1
            if not tail:
                return
            low = self.top - tail + 1
            with self.engine.connect() as conn:
                back = self._give_back(
                    conn.execution_options(isolation_level="AUTOCOMMIT"), self.top, low
                )
            if back:
                del self.free[len(self.free) - tail :]
                self.top = low - 1


_POOLS: weakref.WeakKeyDictionary[Pool, dict[tuple[str, date], NumberPool]] = (
    weakref.WeakKeyDictionary()
)
_POOLS_LOCK = threading.Lock()


def pool(
    engine: Engine, prefix: str, day: date, reserve: Reserve, give_back: GiveBack
) -> NumberPool:
    """The process's pool for one counter of the database `engine` connects to (one per
    connection pool: a new engine, or one disposed, starts from the counter row again)."""
    with _POOLS_LOCK:
        pools = _POOLS.setdefault(engine.pool, {})
        found = pools.get((prefix, day))
        if found is None:
            found = pools[(prefix, day)] = NumberPool(engine, reserve, give_back)
        return found
