"""The ``backfill`` executable: a Ctrl-C while the command line loads ends it quietly.

Light on purpose: it must be running before the heavy imports (typer, rich) it guards.
"""

from __future__ import annotations

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
