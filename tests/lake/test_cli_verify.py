"""``backfill verify`` from the command line: output forms, exit codes, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from backfill.cli import app
from backfill.domain import Month, Symbol, day_start
from backfill.lake import store
from backfill.lake.paths import part_path
from backfill.lake.verify import Tally, verify_lake, verify_stream
from backfill.lake.verify_view import write_terminal
from tests.lake.helpers import BTC, FETCHED, bars_at

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
        "2 gap ranges (6 min), 0 errors, 1 warning",
        "ETH-USD 2025-07-31..2025-08-01: 2/2 days complete, 0 partial, 0 missing, 2,880 rows, "
        "0 gap ranges (0 min), 0 errors, 0 warnings",
        "verify OK: 3 parts, 2 symbols, 0 errors, 1 warning",
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
        (["--symbols", "BTC/USD"], "malformed symbol 'BTC/'"),
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


# ------------------------------------------------------------------ output that scales


def thin_lake(lake: Path, symbols: int, months: int, bars_per_day: int = 40) -> Path:
    """A lake of thin markets written through the store: a month a batch, every day covered,
    ``bars_per_day`` bars a day (so as many gaps a day)."""
    step = 1440 // (bars_per_day + 1)
    for s in range(symbols):
        symbol = Symbol(f"T{s:02d}", "USD")
        month = Month(2024, 1)
        for _ in range(months):
            ends = [
                day_start(day) + timedelta(minutes=7 + step * k)
                for day in month.days()
                for k in range(bars_per_day)
            ]
            store.write_batch(lake, symbol, bars_at(symbol, ends), month.days(), fetched_at=FETCHED)
            month = month.next
    return lake


@pytest.fixture(scope="module")
def newcomer_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a first run leaves: 4 symbols x 31 days, every day with minutes without a bar."""
    return thin_lake(tmp_path_factory.mktemp("newcomer"), symbols=4, months=1, bars_per_day=300)


def test_gaps_are_one_line_per_symbol_unless_asked_for(newcomer_lake: Path) -> None:
    result = runner.invoke(app, ["verify", "--lake", str(newcomer_lake)])
    assert result.exit_code == 0, result.stderr
    gap_lines = [line for line in result.stdout.splitlines() if line.startswith("WARNING gap")]
    assert len(gap_lines) == 4
    assert gap_lines[0].startswith(
        "WARNING gap T00-USD: 35340 minute(s) without a bar in 9331 range(s) on 31 day(s) "
        "[2024-01-01 00:00-00:06, 00:08-00:10, 00:12-00:14, 00:16-00:18, 00:20-00:22, "
        "+9326 more] (--gaps lists every day)"
    )
    every = runner.invoke(app, ["verify", "--lake", str(newcomer_lake), "--gaps"])
    day_lines = [line for line in every.stdout.splitlines() if line.startswith("WARNING gap")]
    assert len(day_lines) == 4 * 31
    assert day_lines[0].startswith("WARNING gap T00-USD 2024-01-01 data/")
    assert day_lines[0].count(",") == 300  # every one of the day's 301 ranges


def test_the_terminal_sums_up_too(newcomer_lake: Path) -> None:
    console = Console(record=True, width=200, force_terminal=True)
    write_terminal(verify_stream(newcomer_lake), Tally(newcomer_lake, None, None), console)
    lines = console.export_text().splitlines()
    assert sum(line.startswith("WARNING gap") for line in lines) == 4
    assert lines[-1] == "verify OK: 4 parts, 4 symbols, 0 errors, 4 warnings"


def test_streamed_json_is_the_documented_document(newcomer_lake: Path) -> None:
    for flags, gaps in (([], False), (["--gaps"], True)):
        result = runner.invoke(app, ["verify", "--lake", str(newcomer_lake), "--json", *flags])
        assert result.exit_code == 0, result.stderr
        document = json.loads(result.stdout)
        assert document == verify_lake(newcomer_lake, gaps=gaps).to_json()
        assert document["version"] == 2
        gap_findings = [f for f in document["findings"] if f["kind"] == "gap"]
        assert len(gap_findings) == (4 * 31 if gaps else 4)
        assert all(f["truncated"] is not gaps for f in gap_findings)
        assert all(len(f["minutes"]) == (f["ranges_total"] if gaps else 5) for f in gap_findings)
        if not gaps:
            assert [d["gaps"] for d in gap_findings[0]["days"]] == [301] * 31


def test_an_empty_lake_warns_and_exits_0(tmp_path: Path) -> None:
    result = runner.invoke(app, ["verify", "--lake", str(tmp_path)])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"WARNING no_parts: no parts found in {tmp_path}: nothing was checked "
        "(is --lake the right folder?)",
        "verify OK: 0 parts, 0 symbols, 0 errors, 1 warning",
    ]


def peak_rss_kib(lake: Path, *flags: str) -> int:
    """Peak resident memory of a real ``backfill verify`` process over ``lake``."""
    command = [sys.executable, "-m", "backfill", "verify", "--lake", str(lake), *flags]
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return usage.ru_maxrss


@pytest.fixture(scope="module")
def small_and_large(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """10 parts, then 100, of thin markets: 40 gaps a day, 1,200 ranges a part."""
    small = thin_lake(tmp_path_factory.mktemp("small"), symbols=1, months=10)
    return small, thin_lake(tmp_path_factory.mktemp("large"), symbols=10, months=10)


@pytest.mark.parametrize("flags", [["--json"], ["--gaps"]], ids=str)
def test_memory_does_not_grow_with_the_lake(
    small_and_large: tuple[Path, Path], flags: list[str]
) -> None:
    # Held, the findings cost ~0.5 MB a part: 45+ MB more for the large lake. Streamed,
    # nothing grows but noise.
    small, large = small_and_large
    growth_mib = (peak_rss_kib(large, *flags) - peak_rss_kib(small, *flags)) / 1024
    assert growth_mib < 15, f"peak RSS grew {growth_mib:.0f} MiB for 10x the parts"


def test_gaps_keeps_the_summary_tally_of_plain_verify(clean_lake: Path) -> None:
    """``--gaps`` lists every day's gaps and the summary still counts them (issue 19)."""
    plain = json.loads(runner.invoke(app, ["verify", "--lake", str(clean_lake), "--json"]).stdout)
    every = json.loads(
        runner.invoke(app, ["verify", "--lake", str(clean_lake), "--json", "--gaps"]).stdout
    )
    tally = [(s["symbol"], s["gaps"], s["gap_minutes"], s["gap_days"]) for s in plain["symbols"]]
    assert tally[0] == ("BTC-USD", 2, 6, 1)
    assert [
        (s["symbol"], s["gaps"], s["gap_minutes"], s["gap_days"]) for s in every["symbols"]
    ] == tally
    text = runner.invoke(app, ["verify", "--lake", str(clean_lake), "--gaps"]).stdout
    assert "2 gap ranges (6 min)" in text, text


def test_days_before_listing_and_after_today_are_not_missing(clean_lake: Path) -> None:
    """verify judges the range as run does: the recorded head and today bound it."""
    from datetime import date, datetime

    from backfill.domain import UTC
    from backfill.lake.heads import Head, record_heads

    args = ["verify", "--lake", str(clean_lake), "--symbols", "BTC-USD", "--json"]
    unheaded = json.loads(
        runner.invoke(app, [*args, "--from", "1990-01-01", "--to", "2025-07-03"]).stdout
    )
    assert unheaded["symbols"][0]["days_missing"] > 9000, "no head recorded: all asked"
    record_heads(clean_lake, {BTC: Head(datetime(2025, 7, 1, tzinfo=UTC), datetime.now(UTC))})
    result = runner.invoke(app, [*args, "--from", "1990-01-01", "--to", "2025-07-03"])
    assert result.exit_code == 0, result.stdout
    [btc] = json.loads(result.stdout)["symbols"]
    assert (btc["days_missing"], btc["from"], btc["head"]) == (0, "2025-07-01", "2025-07-01")
    assert btc["days_before_listing"] == (date(2025, 7, 1) - date(1990, 1, 1)).days
    future = (datetime.now(UTC).date() + timedelta(days=30)).isoformat()
    result = runner.invoke(app, [*args, "--from", "2025-07-01", "--to", future])
    [btc] = json.loads(result.stdout)["symbols"]
    assert btc["to"] == datetime.now(UTC).date().isoformat()
    days_to_today = (datetime.now(UTC).date() - date(2025, 7, 3)).days
    assert btc["days_missing"] == days_to_today, "days after today are not missing"
    text = runner.invoke(app, [*args[:-1], "--from", "1990-01-01", "--to", "2025-07-03"]).stdout
    assert "before listing (head 2025-07-01)" in text, text


def test_a_lake_that_is_a_file_exits_2_saying_so(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    lake.write_text("not a lake")
    result = runner.invoke(app, ["verify", "--lake", str(lake)])
    assert result.exit_code == 2
    assert result.stderr == f"backfill: error: lake folder {lake} is not a folder\n"
    assert lake.read_text() == "not a lake"
