"""Option values coerced without pydantic say what typer's own coercion says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer._click import Context
from typer._coercion import build_runtime_param

from backfill import cli

VALUES = [
    "0",
    "5",
    "-3",
    "2.5",
    "007",
    "1e3",
    " 5",
    "5 ",
    "",
    "abc",
    "a/b",
    "1_000",
    "-0",
    "99999999999999999999",
    5,
    2.5,
    -1,
    True,
    None,
    Path("x"),
]


def outcome(coerce: object, value: object, param: object, ctx: Context) -> object:
    try:
        result = coerce.coerce(value, param=param, ctx=ctx)  # type: ignore[attr-defined]
    except Exception as exc:  # the outcome is compared, whatever it is
        return type(exc), str(exc)
    return type(result), result


def options() -> list[tuple[str, object, object]]:
    group = typer.main.get_command(cli.app)
    found = []
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        for sub in getattr(command, "commands", {name: command}).values():
            found += [
                (f"{name} {p.name}", sub, p) for p in sub.params if hasattr(p, "type_descriptor")
            ]
    return found


def test_every_option_coerces_as_typer_does() -> None:
    """For every option of every command, each value: the same value of the same type, or
    the same error (typer's, with its message)."""
    checked = 0
    for label, command, param in options():
        descriptor = param.type_descriptor  # type: ignore[attr-defined]
        ctx = Context(command)  # type: ignore[arg-type]
        ours = cli._PlainCoercion(descriptor, build_runtime_param)
        theirs = build_runtime_param(descriptor)
        for value in VALUES:
            if descriptor.annotation is bool and isinstance(value, bool):
                continue  # typer never coerces a flag's bool
            expected = outcome(theirs, value, param, ctx)
            assert outcome(ours, value, param, ctx) == expected, (label, value)
            checked += 1
    assert checked > 1000


def test_plan_imports_neither_pydantic_nor_rich_for_plain_output(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom backfill.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('pydantic' in sys.modules or 'rich' in sys.modules)"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "plan",
            "--symbols",
            "BTC-USD",
            "--from",
            "2025-01-01",
            "--to",
            "2025-01-03",
            "--window-days",
            "2",
            "--latency-ms",
            "250",
            "--lake",
            str(tmp_path / "lake"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")},
    )
    assert done.stdout.splitlines()[-1] == "False", done.stdout + done.stderr
    assert "requests 2" in done.stdout


@pytest.mark.parametrize("value", ["x", "1.5"])
def test_a_bad_value_gets_typers_message(tmp_path: Path, value: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "backfill",
            "plan",
            "--symbols",
            "BTC-USD",
            "--from",
            "2025-01-01",
            "--window-days",
            value,
            "--lake",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "valid integer" in done.stderr


def test_run_parses_its_bounded_options_without_pydantic(tmp_path: Path) -> None:
    # run's options with bounds (--request-timeout >= 1 ...) sent every value through
    # typer's coercion, and typer's coercion imports pydantic: 0.1 s before the first request.
    code = (
        "import sys\nfrom backfill.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('pydantic' in sys.modules)"
    )
    args = ["--symbols", "BTC-USD", "--from", "2025-01-09", "--to", "2025-01-01"]
    done = subprocess.run(
        [sys.executable, "-c", code, "run", *args, "--request-timeout", "12.5", "--lake", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert "is after --to" in done.stderr, done.stderr  # parsed through, then refused
    assert done.stdout.splitlines()[-1] == "False", done.stdout + done.stderr
