"""The CLI's exit codes and its one answer to bad input, apart from ``cli`` so that every
command module (``cli``, ``cli_gateway``) takes them from below, never from each other."""

from __future__ import annotations

import typer

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def fail_bad_input(message: str) -> None:
    """One line on stderr and exit code 2: the documented answer to bad input."""
    typer.echo(f"backfill: error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)
