"""The ``backfill`` executable: a Ctrl-C while the command line loads ends it quietly.

Light on purpose: it must be running before the heavy imports (typer, rich) it guards.
"""

from __future__ import annotations

import contextlib
import os
import sys

EXIT_INTERRUPTED = 130


def main() -> None:
    try:
        from backfill.cli import main as cli_main

        cli_main()
    except KeyboardInterrupt:
        # Before any command's own handling (nothing written yet): exit as a shell expects.
        print("backfill: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit as done:
        _exit_now(done.code)
    _exit_now(0)


def _exit_now(code: object) -> None:
    """End the process once the command is done, without tearing the interpreter down.

    Every command has closed what it wrote (parts and logs are replaced atomically, the run's
    workers are joined) before it returns; what is left is freeing modules and objects one by
    one, ~0.1 s after a run that loaded ib_insync and pyarrow. Standard output and error and
    the logging handlers are flushed first; the exit code is what ``sys.exit`` would give.
    """
    import logging

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        # Closed, or a reader that went away (a pipe to head): nothing more to say.
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)
