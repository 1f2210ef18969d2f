"""The ``backfill`` command line: parse, call the core, render, exit. No logic lives here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from backfill.domain import BadInput

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    help="Backfill 1-minute crypto bars from Interactive Brokers into a Parquet lake.",
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

# Options shared by plan, run and verify: the same name means the same thing everywhere.
LakeOpt = Annotated[
    Path | None,
    typer.Option(
        "--lake",
        help="Lake root folder. Default: $LAKE_ROOT, else the current directory.",
        show_default=False,
    ),
]
SymbolsOpt = Annotated[
    str | None,
    typer.Option("--symbols", help="Comma-separated symbols, e.g. BTC-USD,ETH-USD."),
]
SymbolsFileOpt = Annotated[
    Path | None,
    typer.Option("--symbols-file", help="File with one symbol a line (# starts a comment)."),
]
FromOpt = Annotated[
    str | None, typer.Option("--from", help="First UTC day, YYYY-MM-DD (inclusive).")
]
ToOpt = Annotated[
    str | None, typer.Option("--to", help="Last UTC day, YYYY-MM-DD (inclusive).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def fail_bad_input(message: str) -> None:
    """One line on stderr and exit code 2: the documented answer to bad input."""
    typer.echo(f"backfill: error: {message}", err=True)
    raise typer.Exit(EXIT_BAD_INPUT)


def main() -> None:
    try:
        app()
    except BadInput as exc:  # raised by the core before anything is written
        typer.echo(f"backfill: error: {exc}", err=True)
        sys.exit(EXIT_BAD_INPUT)
