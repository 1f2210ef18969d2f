"""``backfill.toml``: settings from flags, then the environment, then the file, then defaults."""

from __future__ import annotations

import json
import subprocess
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfill.cli import app
from backfill.lake import store
from tests.lake.helpers import BTC, FETCHED, days_bars
from tests.run.conftest import backfill

DAILY = """\
symbols = ["BTC-USD", "ETH-USD"]
from = 2025-07-01
to = "2025-07-04"
rate = 2
window-days = 2
max-restarts = 5   # run's, not plan's: plan leaves it alone
"""


def plan_json(*args: str, env: dict[str, str] | None = None):
    result = CliRunner(env=env).invoke(app, ["plan", "--json", *args])
    return result, (json.loads(result.stdout) if result.exit_code == 0 else None)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAKE_ROOT", raising=False)
    return tmp_path


def test_the_current_folders_file_fills_what_the_command_line_leaves_out(here: Path) -> None:
    (here / "backfill.toml").write_text(DAILY)
    result, doc = plan_json()
    assert result.exit_code == 0, result.output
    assert [s["symbol"] for s in doc["symbols"]] == ["BTC-USD", "ETH-USD"]
    assert (doc["first"], doc["last"]) == ("2025-07-01", "2025-07-04")
    assert (doc["rate"], doc["window_days"], doc["max_in_flight"]) == (2.0, 2, 4)
    assert doc["totals"]["requests"] == 4  # two 2-day windows per symbol
    result, doc = plan_json("--rate", "5", "--symbols", "SOL-USD")
    assert doc["rate"] == 5.0, "a flag beats the file"
    assert [s["symbol"] for s in doc["symbols"]] == ["SOL-USD"]


def test_the_lakes_file_is_read_when_the_current_folder_has_none(here: Path) -> None:
    lake = here / "lake"
    lake.mkdir()
    (lake / "backfill.toml").write_text(DAILY)
    for args, env in ((("--lake", str(lake)), None), ((), {"LAKE_ROOT": str(lake)})):
        result, doc = plan_json(*args, env=env)
        assert result.exit_code == 0, result.output
        assert doc["rate"] == 2.0 and len(doc["symbols"]) == 2
    (lake / "backfill.toml").write_text(DAILY + 'lake = "/elsewhere"\n')
    result, _ = plan_json("--lake", str(lake))
    assert result.exit_code == 2 and "cannot name another lake" in result.stderr


def test_the_files_lake_is_used_and_lake_root_beats_it(here: Path) -> None:
    days = [date(2025, 7, 1), date(2025, 7, 2)]
    store.write_batch(here / "full", BTC, days_bars(BTC, days), days, fetched_at=FETCHED)
    (here / "backfill.toml").write_text(DAILY + 'lake = "full"\n')
    result, doc = plan_json()
    assert result.exit_code == 0, result.output
    assert doc["symbols"][0]["days_done"] == 2, "the file's lake, relative to its folder"
    (here / "backfill.toml").write_text(DAILY + 'lake = "empty"\n')
    result, doc = plan_json(env={"LAKE_ROOT": str(here / "full")})
    assert doc["symbols"][0]["days_done"] == 2, "LAKE_ROOT beats the file"
    result, doc = plan_json()
    assert doc["symbols"][0]["days_done"] == 0


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("bogus = 1", "unknown setting 'bogus'"),
        ('rate = "fast"', "rate = 'fast': expected a number"),
        ("window-days = 1.5", "expected a whole number"),
        ("max-restarts = -1", "max-restarts must be at least 0"),  # run's: plan ignores it
        ("strict-pacing = 1", "expected true or false"),
        ("symbols = [1, 2]", "expected a string"),
        ("rate = ", "not valid TOML"),
    ],
)
def test_a_bad_file_is_bad_input_and_nothing_is_written(here: Path, line: str, says: str) -> None:
    base = "from = 2025-07-01\n" + ("" if line.startswith("symbols") else 'symbols = "BTC-USD"\n')
    (here / "backfill.toml").write_text(base + line + "\n")
    for command in ("run",) if line.startswith("max-restarts") else ("plan", "run"):
        result = CliRunner().invoke(app, [command, "--lake", str(here / "lake")])
        assert result.exit_code == 2, (command, result.output)
        assert says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in here.iterdir()) == ["backfill.toml"]


@pytest.mark.e2e
def test_a_daily_job_runs_from_its_file_alone(sim, tmp_path: Path) -> None:
    # Everything a run needs, scaled IB rules included, in the file: no flags at all.
    (tmp_path / "backfill.toml").write_text(
        f'gateway = "{sim.host}:{sim.port}"\nlake = "lake"\nsymbols = ["BTC-USD"]\n'
        "from = 2025-07-01\nto = 2025-07-03\nrate = 50\n"
        "ib-identical-s = 1.5\nib-contract-window-s = 0.2\n"
    )
    done = subprocess.run(
        backfill("run"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    asked = {r.window_end[:10] for r in sim.requests() if r.kind == "historical"}
    assert asked == {"2025-07-01", "2025-07-02", "2025-07-03"}
    assert list((tmp_path / "lake" / "_runs").glob("*.jsonl"))


def test_verify_and_aggregate_read_the_file_too(here: Path) -> None:
    """In a folder configured by backfill.toml, verify checks the file's lake, not the
    (empty) current folder; aggregate builds there (issue 19)."""
    days = [date(2025, 7, 1), date(2025, 7, 2)]
    store.write_batch(here / "full", BTC, days_bars(BTC, days), days, fetched_at=FETCHED)
    (here / "backfill.toml").write_text('lake = "full"\nsymbols = ["BTC-USD", "ETH-USD"]\n')
    result = CliRunner().invoke(app, ["verify", "--json"])
    assert result.exit_code == 1, "ETH-USD has no parts in the file's lake"
    doc = json.loads(result.stdout)
    assert doc["lake"] == str((here / "full").resolve()) and doc["parts"] == 1
    assert f"settings from {here / 'backfill.toml'}" in result.stderr
    (here / "backfill.toml").write_text('lake = "full"\nsymbols = "BTC-USD"\n')
    assert CliRunner().invoke(app, ["verify"]).exit_code == 0
    built = CliRunner().invoke(app, ["aggregate", "--tf", "D1", "--json"])
    assert built.exit_code == 0, built.output
    assert list((here / "full").rglob("timeframe=D1/**/part-*.parquet"))
    assert sorted(p.name for p in here.iterdir()) == ["backfill.toml", "full"]


def test_an_explicit_lakes_file_beats_the_current_folders(here: Path) -> None:
    lake = here / "lake"
    lake.mkdir()
    (here / "backfill.toml").write_text(DAILY)
    (lake / "backfill.toml").write_text(DAILY.replace("rate = 2", "rate = 3"))
    result, doc = plan_json("--lake", str(lake))
    assert doc["rate"] == 3.0, "the lake named on the command line carries its settings"
    assert result.stderr.strip() == f"backfill: settings from {lake / 'backfill.toml'}"
    result, doc = plan_json()
    assert doc["rate"] == 2.0
    assert result.stderr.strip() == f"backfill: settings from {here / 'backfill.toml'}"


def test_a_command_line_symbol_selection_replaces_the_files(here: Path) -> None:
    (here / "symbols.txt").write_text("BTC-USD\nETH-USD\n")
    (here / "backfill.toml").write_text(
        'symbols-file = "symbols.txt"\nfrom = 2025-07-01\nto = 2025-07-02\n'
    )
    _, doc = plan_json()
    assert [s["symbol"] for s in doc["symbols"]] == ["BTC-USD", "ETH-USD"]
    _, doc = plan_json("--symbols", "SOL-USD")
    assert [s["symbol"] for s in doc["symbols"]] == ["SOL-USD"], "replaced, not added to"
    (here / "other.txt").write_text("DOGE-USD\n")
    (here / "backfill.toml").write_text('symbols = "BTC-USD"\nfrom = 2025-07-01\n')
    _, doc = plan_json("--symbols-file", str(here / "other.txt"), "--to", "2025-07-02")
    assert [s["symbol"] for s in doc["symbols"]] == ["DOGE-USD"]
