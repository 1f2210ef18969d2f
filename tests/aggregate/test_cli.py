"""``backfill aggregate`` from the command line, and two of them at once in real processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from backfill.cli import app
from backfill.lake.paths import dataset_root
from tests.aggregate.conftest import BTC, ETH
from tests.aggregate.helpers import write_m1

runner = CliRunner()


def snapshot(lake: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(lake).as_posix(): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in lake.rglob("*")
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tf", "M5,M7"], "unknown timeframe 'M7'"),
        (["--tf", "M1"], "unknown timeframe 'M1'"),
        (["--from", "2025-02-30"], "--from"),
        (["--from", "2025-02-02", "--to", "2025-01-01"], "after --to"),
        (["--symbols", "SOL-USD"], "no M1 data"),
        (["--symbols", "BTC_USD"], "malformed symbol"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    edge_lake: Path, args: list[str], message: str
) -> None:
    before = snapshot(edge_lake)
    result = runner.invoke(app, ["aggregate", "--lake", str(edge_lake), *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(edge_lake) == before


def test_a_missing_lake_is_bad_input(tmp_path: Path) -> None:
    result = runner.invoke(app, ["aggregate", "--lake", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    assert not (tmp_path / "nope").exists()


def test_plain_lines_then_a_json_document_of_what_was_skipped(edge_lake: Path) -> None:
    result = runner.invoke(app, ["aggregate", "--lake", str(edge_lake), "--tf", "D1,H1"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "BTC-USD H1 2025-01:" in result.stdout and "(missing)" in result.stdout
    assert lines[-1].startswith("aggregate: 6 part(s) written")
    result = runner.invoke(app, ["aggregate", "--lake", str(edge_lake), "--tf", "D1,H1", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["version"] == 1 and doc["ok"] is True
    assert doc["timeframes"] == ["H1", "D1"] and doc["include_partial"] is False
    assert doc["totals"] == {"built": 0, "rows": 0, "skipped": 6, "failed": 0}
    assert {s["reason"] for s in doc["skipped"]} == {"fresh"}
    assert {(s["timeframe"], s["month"]) for s in doc["skipped"]} == {
        (tf, m) for tf in ("H1", "D1") for m in ("2024-12", "2025-01", "2025-02")
    }


def test_json_names_each_part_built_and_why(edge_lake: Path) -> None:
    result = runner.invoke(
        app,
        [
            "aggregate",
            "--lake",
            str(edge_lake),
            "--tf",
            "h4",
            "--json",
            "--include-partial",
            "--from",
            "2025-02-01",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["from"] == "2025-02-01" and doc["to"] is None
    [built] = doc["built"]
    assert built["symbol"] == "BTC-USD" and built["timeframe"] == "H4"
    assert built["month"] == "2025-02" and built["reason"] == "missing"
    assert built["path"] == (
        "data/source=ibkr/market=crypto/timeframe=H4/symbol=BTC-USD/year=2025/month=02/"
        "part-2025-02.parquet"
    )
    assert built["rows"] == pq.read_metadata(edge_lake / built["path"]).num_rows > 0


def aggregate_tables(lake: Path) -> dict[str, list]:
    out = {}
    for path in sorted(dataset_root(lake).rglob("*.parquet")):
        if "timeframe=M1/" not in path.as_posix():
            out[path.relative_to(lake).as_posix()] = pq.read_table(path).to_pylist()
    return out


@pytest.mark.e2e
def test_two_aggregates_at_once_on_one_lake_are_safe(edge_lake: Path, tmp_path: Path) -> None:
    write_m1(edge_lake, ETH, date(2025, 1, 1), date(2025, 2, 10))
    alone = tmp_path / "alone"
    shutil.copytree(edge_lake, alone)
    assert runner.invoke(app, ["aggregate", "--lake", str(alone)]).exit_code == 0
    command = [sys.executable, "-m", "backfill", "aggregate", "--lake", str(edge_lake), "--json"]
    runs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=60) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
        assert json.loads(out)["ok"] is True
    # whichever wrote a part last, every part is whole and as one build alone makes it
    assert aggregate_tables(edge_lake) == aggregate_tables(alone)
    assert not [p for p in edge_lake.rglob("*.tmp")]
    before = snapshot(edge_lake)
    again = runner.invoke(app, ["aggregate", "--lake", str(edge_lake), "--json"])
    assert json.loads(again.stdout)["totals"]["built"] == 0
    assert snapshot(edge_lake) == before
    # the symbols the two processes share are all there
    assert {p.split("/")[4] for p in aggregate_tables(edge_lake)} == {
        f"symbol={BTC}",
        f"symbol={ETH}",
    }
