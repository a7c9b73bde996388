"""How caseloop starts its child processes: the prepare worker (daemon/prepare.py) and the
delivery process of `run --once` (daemon/runners/delivery.py).

They are forked from a fork server (multiprocessing's "forkserver" start method), never from
the main process itself, which runs threads (heartbeat, IDLE waits) that a plain fork would
copy mid-step. The fork server is a fresh, single-threaded Python that imports what the
children run (PRELOAD) once; every child forked from it then starts in milliseconds instead of
importing for a second on its own ("spawn"), and a worker started again after a failure costs
no second import. `start()` launches the fork server (`run --once` calls it before its own
imports, so the server imports on another core meanwhile); call it before starting a child.

Two things a child would otherwise take from the fork server rather than from its parent:
- the module search path: the server is a `python -c`, which would put its working folder
  first, so a file named like a module there (`email.py` in a cron user's home) would be
  imported in place of the real one. The server starts with PYTHONSAFEPATH.
- the environment: the server's is the one of the moment it started. A child is handed its
  parent's of the moment it is started (`environ()`, then `adopt()`), as a spawned one had it.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import threading

PRELOAD = ["daemon.prepare", "daemon.runners.delivery"]

_starting = threading.Lock()  # the environment is the process's: one launch at a time


def context() -> multiprocessing.context.ForkServerContext:
    """The start method of every child process caseloop starts."""
    ctx = multiprocessing.get_context("forkserver")
    assert isinstance(ctx, multiprocessing.context.ForkServerContext)
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start() -> None:
    """Launch the fork server, unless it runs (it imports PRELOAD beside the caller)."""
    context()
    with _starting:
        before = os.environ.get("PYTHONSAFEPATH")
        os.environ["PYTHONSAFEPATH"] = "1"  # not the working folder first on its path
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            if before is None:
                del os.environ["PYTHONSAFEPATH"]
            else:
                os.environ["PYTHONSAFEPATH"] = before


def environ() -> dict[str, str]:
    """This process's environment, to hand to a child as it is started."""
    return dict(os.environ)


def adopt(env: dict[str, str]) -> None:
    """In the child: its parent's environment instead of the fork server's."""
    os.environ.clear()
    os.environ.update(env)
