"""How caseloop starts its child processes: the prepare worker (daemon/prepare.py) and the
delivery process of `run --once` (daemon/runners/delivery.py).

They are forked from a fork server (multiprocessing's "forkserver" start method), never from
the main process itself, which runs threads (heartbeat, IDLE waits) that a plain fork would
copy mid-step. The fork server is a fresh, single-threaded Python that imports what the
children run (PRELOAD) once; every child forked from it then starts in milliseconds instead of
importing for a second on its own ("spawn"), and a worker started again after a failure costs
no second import. `start()` launches the fork server early, so that its imports overlap the
main process's own start-up on another core.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver

PRELOAD = ["daemon.prepare", "daemon.runners.delivery"]


def context() -> multiprocessing.context.ForkServerContext:
    """The start method of every child process caseloop starts."""
    ctx = multiprocessing.get_context("forkserver")
    assert isinstance(ctx, multiprocessing.context.ForkServerContext)
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start() -> None:
    """Launch the fork server now (it imports PRELOAD beside the caller's own start-up)."""
    context()
    multiprocessing.forkserver.ensure_running()
