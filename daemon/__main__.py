"""`python -m daemon` and the `caseloop` command.

For `caseloop run --once` it starts the fork server of the child processes (the prepare
worker, delivery: daemon/children.py) before the command's own imports, so that server imports
on another core meanwhile. (The daemon, `run`, starts it when it first needs a child: a quiet
mailbox never does, and the server would hold 70 MB for nothing.) When the
command is done it ends the process without tearing the interpreter down: every file,
connection and child process is closed by then, the exit handlers have run, output and logs
are flushed, and freeing each imported module's objects one by one took 0.1-0.2 s of every
command's run.
"""

from __future__ import annotations

import contextlib
import sys


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` (default: this process's own, which then ends here)."""
    args = sys.argv[1:] if argv is None else argv
    if _command(args) == "run" and "--once" in args:
        from daemon import children

        children.start()  # imports what the children run, beside the imports below
    from daemon.cli import main as run_command

    code = run_command(args)
    if argv is None:
        _end(code)
    return code


def _command(args: list[str]) -> str | None:
    """The subcommand named in `args` (the first word that is not an option or its value)."""
    valued = {"--config", "--log-level"}
    words = iter(args)
    for word in words:
        if word in valued:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def _end(code: int) -> None:
    import atexit
    import gc
    import os

    # Objects in reference cycles (multiprocessing's queues and events among them) are freed
    # now: their finalizers give back the semaphores, which multiprocessing's resource
    # tracker would otherwise find left over and warn about.
    gc.collect()
    atexit._run_exitfuncs()  # what asked to run at exit still does (logging's flush, a temp dir)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BrokenPipeError:  # the reader has gone (`| head`): what it wanted, it had
            pass
        except (OSError, ValueError) as exc:  # a full disk: not an end that went well
            code = code or 120  # Python's own code for output it could not flush at exit
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"caseloop: cannot write output: {exc}\n")
    os._exit(code)


if __name__ == "__main__":
    raise SystemExit(main())
