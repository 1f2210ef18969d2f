"""``backfill plan`` against a real lake written by the store."""

from __future__ import annotations

import json
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from backfill.cli import app
from backfill.domain import Symbol
from backfill.durations import format_duration
from backfill.lake import coverage_index, footers, store
from backfill.plan import plan
from backfill.plan_view import format_ranges, plan_table
from backfill.run import events as ev
from backfill.run.runlog import RunLog
from backfill.settings import RunSettings
from tests.lake.helpers import BTC, FETCHED, day_bars, days_bars

JULY = [date(2025, 7, i) for i in range(1, 4)]
GOOD = "--symbols BTC-USD --from 2025-07-01 --to 2025-07-02"


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """BTC-USD: 1-3 July complete, 4 July partial; nothing else."""
    root = tmp_path / "lake"
    store.write_batch(root, BTC, days_bars(BTC, JULY), JULY, fetched_at=FETCHED)
    partial = date(2025, 7, 4)
    evening_missing = day_bars(BTC, partial, skip=range(600, 1440))
    store.write_batch(
        root, BTC, evening_missing, [partial], fetched_at=FETCHED, partial_days=[partial]
    )
    return root


def invoke(args: str, *paths: str | Path, env: dict[str, str] | None = None):
    """Run ``backfill plan ARGS PATHS…``; ARGS is split on spaces (paths are kept whole)."""
    return CliRunner(env=env).invoke(app, ["plan", *args.split(), *map(str, paths)])


def files_under(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")} if root.exists() else {}


def test_json_plan_from_a_real_lake(lake: Path) -> None:
    before = files_under(lake)
    result = invoke(
        "--symbols BTC-USD,ETH-USD --from 2025-07-01 --to 2025-07-06 --json --lake", lake
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    btc, eth = doc["symbols"]
    assert btc["symbol"] == "BTC-USD"
    assert (btc["days_done"], btc["days_total"], btc["days_missing"]) == (3, 6, 3)
    assert btc["missing_ranges"] == [["2025-07-04", "2025-07-06"]]  # the partial day again
    assert (eth["days_done"], eth["requests"]) == (0, 6)
    assert doc["totals"]["requests"] == 9
    assert doc["totals"]["eta_seconds"] == pytest.approx(9 / 0.7, abs=1e-3)
    assert files_under(lake) == before  # footers read; parts this young are not remembered


def test_a_second_plan_comes_from_the_cache_and_says_the_same(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts old enough to remember: the second plan stats them and parses no footer."""
    monkeypatch.setattr(coverage_index, "time_ns", lambda: time.time_ns() + 60 * 10**9)
    args = "--symbols BTC-USD,ETH-USD --from 2025-06-20 --to 2025-07-06 --json --lake"
    parts = files_under(lake / "data")
    first = invoke(args, lake)
    assert first.exit_code == 0, first.output
    assert (lake / "_cache" / "coverage.json").is_file()

    def no_footer(path: object) -> bytes:
        raise AssertionError(f"footer of {path} read again")

    monkeypatch.setattr(footers, "read_coverage_record", no_footer)
    second = invoke(args, lake)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout) == json.loads(first.stdout)
    assert files_under(lake / "data") == parts, "the parts are never touched"
    checked = CliRunner().invoke(app, ["verify", "--lake", str(lake), "--json"])
    assert not [f for f in json.loads(checked.stdout)["findings"] if f["severity"] == "error"]


def test_plain_text_when_not_a_terminal(lake: Path) -> None:
    result = invoke(
        "--symbols BTC-USD --from 2025-07-01 --to 2025-07-04 --window-days 2 --lake", lake
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("BTC-USD  days 3/4  months 0/1  missing 2025-07-04  requests 1")
    assert lines[1].startswith("total  days 3/4")
    assert "2-day windows" in lines[2]


def test_settings_reach_the_plan(lake: Path) -> None:
    result = invoke(
        "--symbols ETH-USD --from 2025-07-01 --to 2025-07-10 --json --rate 2 --window-days 3 "
        "--workers 1 --max-in-flight 1 --latency-ms 1000 --lake",
        lake,
    )
    doc = json.loads(result.stdout)
    settings = ("rate", "window_days", "workers", "max_in_flight", "latency_ms")
    assert [doc[k] for k in settings] == [2, 3, 1, 1, 1000]
    assert doc["totals"]["requests"] == 4
    assert doc["totals"]["eta_seconds"] == pytest.approx(4 * 1.0)  # latency-bound


def test_workers_default_like_run(tmp_path: Path) -> None:
    result = invoke(
        "--symbols BTC-USD,ETH-USD --from 2025-07-01 --to 2025-07-01 --json --lake", tmp_path
    )
    assert json.loads(result.stdout)["workers"] == 2


def test_symbols_file_and_lake_root_from_the_environment(lake: Path, tmp_path: Path) -> None:
    listing = tmp_path / "symbols.txt"
    listing.write_text("# what we trade\nBTC-USD\neth-usd  # lower case is fine\n")
    result = invoke(
        "--from 2025-07-01 --to 2025-07-03 --json --symbols-file",
        listing,
        env={"LAKE_ROOT": str(lake)},
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [s["symbol"] for s in doc["symbols"]] == ["BTC-USD", "ETH-USD"]
    assert doc["symbols"][0]["days_done"] == 3


def test_a_missing_lake_means_everything_is_missing_and_is_not_created(tmp_path: Path) -> None:
    root = tmp_path / "nowhere"
    result = invoke("--symbols BTC-USD --from 2025-07-01 --to 2025-07-31 --json --lake", root)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["totals"]["days_missing"] == 31
    assert not root.exists()


def test_days_after_today_are_not_planned(tmp_path: Path) -> None:
    today = datetime.now(timezone.utc).date()
    result = invoke(f"--symbols BTC-USD --from {today} --to 2999-12-31 --json --lake", tmp_path)
    assert result.exit_code == 0, result.output
    (sym,) = json.loads(result.stdout)["symbols"]
    # Around midnight UTC the command may see the next day: either is right.
    assert sym["last"] >= str(today) and sym["days_total"] in (1, 2)


def test_strict_pacing_plans_at_the_session_rate(tmp_path: Path) -> None:
    args = "--symbols BTC-USD,ETH-USD --from 2025-07-01 --to 2025-07-30 --rate 10 --json --lake"
    fast = json.loads(invoke(args, tmp_path).stdout)["totals"]["eta_seconds"]
    strict = invoke(f"--strict-pacing {args}", tmp_path)
    assert strict.exit_code == 0, strict.output
    assert json.loads(strict.stdout)["totals"]["eta_seconds"] == pytest.approx(60 / 0.1)
    assert fast < 60 / 0.1 / 10


def test_to_defaults_to_today(tmp_path: Path) -> None:
    today = datetime.now(timezone.utc).date()
    result = invoke(f"--symbols BTC-USD --from {today - timedelta(days=2)} --json --lake", tmp_path)
    assert result.exit_code == 0, result.output
    (sym,) = json.loads(result.stdout)["symbols"]
    assert sym["days_missing"] == sym["days_total"]
    # Around midnight UTC the command may see the next day: either is right.
    assert sym["last"] >= str(today) and sym["days_total"] in (3, 4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("--symbols BTC-USD --from 2025-07-1x --to 2025-07-02", "--from"),
        ("--symbols BTC-USD --from 2025-07-01 --to July", "--to"),
        ("--symbols BTC/USD --from 2025-07-01 --to 2025-07-02", "malformed"),
        ("--symbols BTC-USD --from 2025-07-03 --to 2025-07-02", "after"),
        ("--from 2025-07-01 --to 2025-07-02", "symbols"),
        ("--symbols BTC-USD --to 2025-07-02", "--from"),
        (f"{GOOD} --rate 0", "--rate"),
        (f"{GOOD} --rate fast", "--rate"),
        (f"{GOOD} --rate auto --max-rate 0", "--max-rate"),
        (f"{GOOD} --workers 0", "--workers"),
        (f"{GOOD} --max-in-flight 0", "--max-in-flight"),
        (f"{GOOD} --window-days 0", "--window-days"),
        (f"{GOOD} --latency-ms -5", "--latency-ms"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, args: str, message: str) -> None:
    result = invoke(f"{args} --lake", tmp_path / "lake")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("backfill: error:") and message in lines[0]
    assert not (tmp_path / "lake").exists()


def write_run_log(lake: Path, run_id: str, events: list) -> None:
    with RunLog(lake, run_id) as log:
        for event in events:
            log.on_event(event)


def test_plan_rate_auto_estimates_from_what_earlier_auto_runs_held(lake: Path) -> None:
    result = invoke(f"{GOOD} --rate auto --json --lake", lake)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["rate"] == 0.7 and doc["rate_auto"] == {"measured_by_run": None}
    t0 = 1_750_000_000.0
    # An auto run: 0.7 req/s for 20 s, 2.0 for 60 s, 1.4 for its last 20 s.
    write_run_log(
        lake,
        "20250701T000000Z-aaaa",
        [
            ev.BudgetChanged("", at=t0, rate=0.7, reason="auto: probing from the start rate"),
            ev.BudgetChanged("", at=t0 + 20, rate=2.0, reason="auto: latency flat, probing up"),
            ev.RequestDone(
                "BTC-USD", window="2025-07-01", outcome="bars", latency_s=0.1, at=t0 + 50
            ),
            ev.BudgetChanged("", at=t0 + 80, rate=1.4, reason="request timed out: stepped down"),
            ev.WorkerFinished("BTC-USD", at=t0 + 100, days_fetched=1, rows=1440),
        ],
    )
    # A later fixed-rate run, and an auto run too short to say anything: both skipped.
    write_run_log(
        lake,
        "20250702T000000Z-bbbb",
        [
            ev.BudgetChanged("", at=t0 + 900, rate=9.0, reason="start"),
            ev.WorkerFinished("BTC-USD", at=t0 + 1900, days_fetched=1, rows=1440),
        ],
    )
    write_run_log(
        lake,
        "20250703T000000Z-cccc",
        [
            ev.BudgetChanged(
                "", at=t0 + 2000, rate=0.7, reason="auto: probing from the start rate"
            ),
            ev.WorkerFinished("BTC-USD", at=t0 + 2010, days_fetched=1, rows=1440),
        ],
    )
    result = invoke(f"{GOOD} --rate auto --json --lake", lake)
    doc = json.loads(result.stdout)
    held = (0.7 * 20 + 2.0 * 60 + 1.4 * 20) / 100
    assert doc["rate"] == pytest.approx(held)
    assert doc["rate_auto"] == {"measured_by_run": "20250701T000000Z-aaaa"}
    text = invoke(f"{GOOD} --rate auto --lake", lake).stdout
    assert text.splitlines()[0] == (
        f"--rate auto: {held:.2f} req/s, what run 20250701T000000Z-aaaa held"
    )
    capped = json.loads(invoke(f"{GOOD} --rate auto --max-rate 1 --json --lake", lake).stdout)
    assert capped["rate"] == 1.0


def test_unreadable_symbols_file_is_bad_input(tmp_path: Path) -> None:
    result = invoke(
        "--from 2025-07-01 --to 2025-07-02 --symbols-file",
        tmp_path / "absent.txt",
        "--lake",
        tmp_path,
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("backfill: error: --symbols-file")


def test_a_lake_that_is_a_file_is_bad_input(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "lake.txt"
    not_a_folder.write_text("x")
    result = invoke(f"{GOOD} --lake", not_a_folder)
    assert result.exit_code == 2
    assert "not a folder" in result.stderr
    assert not_a_folder.read_text() == "x"


def test_the_terminal_table_shows_symbols_and_totals() -> None:
    symbols = [BTC, Symbol("ETH", "USD")]
    p = plan(
        symbols,
        date(2025, 7, 1),
        date(2025, 7, 3),
        {},
        today=date(2025, 9, 1),
        settings=RunSettings(),
    )
    console = Console(record=True, width=140, force_terminal=True)
    console.print(plan_table(p))
    text = console.export_text()
    assert "BTC-USD" in text and "ETH-USD" in text and "total" in text
    assert "2025-07-01..2025-07-03" in text and "0/3" in text and "0/6" in text


def test_formatting_helpers() -> None:
    durations = [format_duration(s) for s in (0, 4.25, 45, 723, 11_100, 187_200)]
    assert durations == ["0s", "4.2s", "45s", "12m03s", "3h05m", "2d04h"]
    ranges = [(date(2025, 7, i), date(2025, 7, i)) for i in (1, 3, 5, 7, 9)]
    assert format_ranges(ranges) == "2025-07-01, 2025-07-03, 2025-07-05, +2 more"
    assert format_ranges([]) == "-"


def test_head_clips_each_symbol_to_its_earliest_bar_at_the_gateway(make_sim, tmp_path):
    gateway = make_sim()  # SOL lists on 2020-09-01 in the simulator; BTC long before
    result = invoke(
        f"--head --gateway {gateway.host}:{gateway.port} --symbols SOL-USD,BTC-USD "
        "--from 2020-08-25 --to 2020-09-03 --json --lake",
        tmp_path / "lake",
    )
    assert result.exit_code == 0, result.output
    by_symbol = {s["symbol"]: s for s in json.loads(result.output)["symbols"]}
    assert by_symbol["SOL-USD"]["first"] == "2020-09-01"
    assert by_symbol["SOL-USD"]["days_missing"] == 3
    assert by_symbol["BTC-USD"]["days_missing"] == 10
    assert [r.kind for r in gateway.requests()].count("head_timestamp") == 2
    assert not [r for r in gateway.requests() if r.kind == "historical"]


def test_head_with_an_unknown_symbol_is_bad_input(make_sim, tmp_path):
    gateway = make_sim()
    result = invoke(
        f"--head --gateway {gateway.host}:{gateway.port} --symbols NOPE-USD "
        "--from 2020-08-25 --to 2020-09-03 --lake",
        tmp_path / "lake",
    )
    assert result.exit_code == 2
    assert "NOPE-USD" in result.output


@pytest.mark.parametrize(
    ("command", "path"),
    [
        ("plan", "<lake>/_cache/coverage.json"),
        ("plan", "<lake>/_gateway/heads.json"),
        ("run", "<lake>/_runs/"),
        ("probe", "_gateway/<host>-<port>.json"),
    ],
)
def test_help_shows_the_lake_paths_it_names(command: str, path: str) -> None:
    """--help is rendered as Markdown, where a bare <lake> is an HTML tag and vanishes."""
    shown = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
    assert shown.exit_code == 0
    assert path in " ".join(shown.stdout.split()), shown.stdout


def test_a_bare_plan_in_a_lake_plans_the_symbols_it_holds(lake: Path, monkeypatch) -> None:
    """Issue 19: no --symbols, no --from: the lake's own symbols from its first day, said."""
    monkeypatch.chdir(lake)
    monkeypatch.delenv("LAKE_ROOT", raising=False)
    store.write_batch(
        lake,
        Symbol.parse("ETH-USD"),
        days_bars(Symbol.parse("ETH-USD"), JULY),
        JULY,
        fetched_at=FETCHED,
    )
    result = CliRunner().invoke(app, ["plan", "--to", "2025-07-05", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [s["symbol"] for s in doc["symbols"]] == ["BTC-USD", "ETH-USD"]
    assert (doc["first"], doc["symbols_from"]) == ("2025-07-01", "lake")
    text = CliRunner().invoke(app, ["plan", "--to", "2025-07-05"]).stdout
    assert text.splitlines()[0] == (
        "No --symbols: the 2 symbols the lake holds (BTC-USD, "
        "ETH-USD), from the first day it holds, 2025-07-01"
    ), text
    assert "2 workers" in text
    one = (
        CliRunner()
        .invoke(app, ["plan", "--symbols", "BTC-USD", "--from", "2025-07-01", "--to", "2025-07-05"])
        .stdout
    )
    assert "1 worker " in one and "1 workers" not in one, one
    empty = CliRunner().invoke(app, ["plan", "--lake", str(lake / "nothing-here")])
    assert empty.exit_code == 2 and "give --symbols" in empty.stderr
