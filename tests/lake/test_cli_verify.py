"""``backfill verify`` from the command line: output forms, exit codes, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from backfill.cli import app
from backfill.domain import Month
from backfill.lake.paths import part_path
from backfill.lake.verify import Tally, verify_stream
from backfill.lake.verify_view import write_terminal
from tests.lake.helpers import BTC

runner = CliRunner()


def snapshot(lake: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(lake)): (p.stat().st_size, p.stat().st_mtime_ns) for p in lake.rglob("*")
    }


def spoil_btc(lake: Path) -> Path:
    path = part_path(lake, BTC, Month(2025, 7))
    path.write_bytes(b"not parquet")
    return path


def test_clean_lake_exits_0_with_plain_lines(clean_lake: Path) -> None:
    result = runner.invoke(app, ["verify", "--lake", str(clean_lake)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [
        "WARNING gap BTC-USD: 6 minute(s) without a bar in 2 range(s) on 1 day(s) "
        "[2025-07-02 10:00-10:04, 23:59] (--gaps lists every day)",
        "BTC-USD 2025-07-01..2025-07-03: 3/3 days complete, 0 partial, 0 missing, 4,314 rows, "
        "2 gaps (6 min), 0 errors, 1 warnings",
        "ETH-USD 2025-07-31..2025-08-01: 2/2 days complete, 0 partial, 0 missing, 2,880 rows, "
        "0 gaps (0 min), 0 errors, 0 warnings",
        "verify OK: 3 parts, 2 symbols, 0 errors, 1 warnings",
    ]


def test_lake_root_from_the_environment(clean_lake: Path) -> None:
    result = runner.invoke(app, ["verify", "--json"], env={"LAKE_ROOT": str(clean_lake)})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["lake"] == str(clean_lake.resolve())


def test_an_error_exits_1_and_json_names_it(clean_lake: Path) -> None:
    path = spoil_btc(clean_lake)
    result = runner.invoke(app, ["verify", "--lake", str(clean_lake), "--json"])
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False
    [unreadable] = [f for f in document["findings"] if f["kind"] == "unreadable"]
    assert unreadable["path"] == path.relative_to(clean_lake).as_posix()


def test_symbols_file_and_range_narrow_the_scope(clean_lake: Path, tmp_path: Path) -> None:
    spoil_btc(clean_lake)
    listing = tmp_path / "symbols.txt"
    listing.write_text("# only ether\nETH-USD\n")
    args = ["verify", "--lake", str(clean_lake), "--symbols-file", str(listing), "--json"]
    result = runner.invoke(app, [*args, "--from", "2025-07-31", "--to", "2025-08-01"])
    assert result.exit_code == 0, result.stdout
    document = json.loads(result.stdout)
    assert [s["symbol"] for s in document["symbols"]] == ["ETH-USD"]
    assert (document["from"], document["to"]) == ("2025-07-31", "2025-08-01")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "2025-02-30"], "--from: '2025-02-30' is not a date"),
        (["--to", "tomorrow"], "--to: 'tomorrow' is not a date"),
        (["--from", "2025-07-03", "--to", "2025-07-01"], "--from 2025-07-03 is after --to"),
        (["--symbols", "BTC/USD"], "malformed symbol 'BTC/USD'"),
        (["--symbols-file", "/nonexistent/symbols.txt"], "--symbols-file"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_touches_nothing(
    clean_lake: Path, args: list[str], message: str
) -> None:
    before = snapshot(clean_lake)
    result = runner.invoke(app, ["verify", "--lake", str(clean_lake), *args])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("backfill: error: ")
    assert message in result.stderr
    assert snapshot(clean_lake) == before


def test_a_missing_lake_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", "--lake", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert result.stderr == f"backfill: error: lake folder {tmp_path / 'nowhere'} does not exist\n"
    assert not (tmp_path / "nowhere").exists()


def test_the_terminal_table(clean_lake: Path) -> None:
    spoil_btc(clean_lake)
    console = Console(record=True, width=160, force_terminal=True)
    write_terminal(verify_stream(clean_lake), Tally(clean_lake, None, None), console)
    text = console.export_text()
    assert "days complete" in text and "ETH-USD" in text
    assert "ERROR unreadable BTC-USD" in text
    assert "verify FAILED" in text


def test_the_real_process_exit_codes(clean_lake: Path) -> None:
    command = [sys.executable, "-m", "backfill", "verify", "--lake", str(clean_lake)]
    assert subprocess.run(command, capture_output=True, check=False).returncode == 0
    spoil_btc(clean_lake)
    assert subprocess.run(command, capture_output=True, check=False).returncode == 1
    bad = subprocess.run([*command, "--from", "x"], capture_output=True, text=True, check=False)
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr.startswith("backfill: error: --from")
