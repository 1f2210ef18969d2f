"""Every command's --help: each option shown, a flag without a value placeholder."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from backfill.cli import app

COMMANDS = sorted(typer.main.get_command(app).commands)


def shown_options(command: str | None) -> set[str]:
    """The option names ``backfill [command] --help`` must show (hidden ones excepted)."""
    group = typer.main.get_command(app)
    cmd = group if command is None else group.commands[command]
    names = {"--help"}
    for param in cmd.params:
        if not getattr(param, "hidden", False):
            names |= {o for o in (*param.opts, *param.secondary_opts) if o.startswith("-")}
    return names


def test_every_command_is_checked() -> None:
    assert {"run", "plan", "verify", "aggregate", "levels", "probe", "gateway"} <= set(COMMANDS)


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_shows_every_option_and_flags_take_no_value(command: str | None) -> None:
    args = ["--help"] if command is None else [command, "--help"]
    shown = CliRunner(env={"COLUMNS": "200"}).invoke(app, args, terminal_width=200)
    assert shown.exit_code == 0, shown.output
    assert "<bool>" not in shown.stdout, shown.stdout
    words = set(shown.stdout.replace(",", " ").split())
    missing = shown_options(command) - words
    assert not missing, shown.stdout
