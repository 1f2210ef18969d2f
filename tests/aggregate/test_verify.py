"""``verify`` on aggregate parts: a clean build passes; staleness, misalignment and broken
parts are found, naming the part (and, for a stale one, the command that refreshes it)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from backfill.aggregate.build import AggregateRequest, aggregate_lake
from backfill.aggregate.timeframes import TIMEFRAMES
from backfill.domain import UTC, Month
from backfill.lake.paths import aggregate_part_path, part_path, symbol_dir
from backfill.lake.schema import AGGREGATE_SCHEMA
from backfill.lake.verify import Kind, Severity, verify_lake
from tests.aggregate.conftest import BTC
from tests.aggregate.helpers import LATER, write_m1

NOW = datetime(2026, 2, 1, tzinfo=UTC)


@pytest.fixture
def built_lake(edge_lake: Path) -> Path:
    aggregate_lake(AggregateRequest(edge_lake, TIMEFRAMES), now=NOW)
    return edge_lake


def aggregate_findings(lake: Path):
    report = verify_lake(lake)
    return report, [f for f in report.findings if f.path and "timeframe=M1/" not in str(f.path)]


def test_a_clean_build_verifies_clean(built_lake: Path) -> None:
    report, findings = aggregate_findings(built_lake)
    assert findings == []
    m1_parts = len(list(built_lake.rglob("timeframe=M1/**/part-*.parquet")))
    aggregate_parts = len(list(built_lake.rglob("part-*.parquet"))) - m1_parts
    assert aggregate_parts > 0 and report.parts == m1_parts + aggregate_parts


def test_a_stale_aggregate_is_an_error_naming_the_command_that_refreshes_it(
    built_lake: Path,
) -> None:
    write_m1(built_lake, BTC, date(2025, 1, 2), date(2025, 1, 2), fetched_at=LATER, seed=3)
    report, findings = aggregate_findings(built_lake)
    # its bars are no longer the M1 lake's: readers of H1 and of M1 disagree until refreshed
    assert not report.ok
    assert {f.severity for f in findings} == {Severity.ERROR}
    stale = [f for f in findings if f.kind is Kind.AGGREGATE_STALE]
    assert {f.severity for f in stale} == {Severity.ERROR}
    assert {f.path for f in stale} == {
        aggregate_part_path(built_lake, BTC, tf.name, Month(2025, 1)) for tf in TIMEFRAMES
    }
    command = next(f for f in stale if "timeframe=H1" in str(f.path)).detail.split("`")[1]
    assert command == (
        f"backfill aggregate --lake {built_lake} --symbols BTC-USD --tf H1 "
        "--from 2024-12-31 --to 2025-01-31"
    )
    done = subprocess.run(
        [sys.executable, "-m", "backfill", *command.split()[1:]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    _, findings = aggregate_findings(built_lake)
    assert {str(f.path) for f in findings if f.kind is Kind.AGGREGATE_STALE} == {
        str(aggregate_part_path(built_lake, BTC, tf.name, Month(2025, 1)))
        for tf in TIMEFRAMES
        if tf.name != "H1"
    }


def rewrite(path: Path, change) -> None:
    """Spoil a part in place, keeping its footer record."""
    table = pq.read_table(path)
    changed = change(table)
    if changed.column_names == AGGREGATE_SCHEMA.names:
        changed = changed.cast(AGGREGATE_SCHEMA)  # keep the columns non-nullable
    pq.write_table(changed.replace_schema_metadata(table.schema.metadata), path)


def test_a_misaligned_bucket_is_an_error(built_lake: Path) -> None:
    path = aggregate_part_path(built_lake, BTC, "H1", Month(2025, 1))

    def shift_one(table: pa.Table) -> pa.Table:
        ts = table["ts"].to_pylist()
        ts[5] = ts[5] + timedelta(minutes=1)  # a bucket stamped 05:01
        return table.set_column(0, "ts", pa.array(ts, table.schema.field("ts").type))

    rewrite(path, shift_one)
    report, findings = aggregate_findings(built_lake)
    assert not report.ok
    [finding] = findings
    assert finding.kind is Kind.BUCKET_MISALIGNED and finding.path == path
    assert "2025-01-01T05:01:00+00:00" in finding.detail


def test_order_schema_and_footer_errors(built_lake: Path) -> None:
    h4 = aggregate_part_path(built_lake, BTC, "H4", Month(2025, 1))
    rewrite(h4, lambda t: t.take(pa.array([1, 0, *range(2, t.num_rows)])))
    d1 = aggregate_part_path(built_lake, BTC, "D1", Month(2025, 1))
    rewrite(d1, lambda t: t.drop_columns(["minutes"]))
    m30 = aggregate_part_path(built_lake, BTC, "M30", Month(2025, 1))
    pq.write_table(pq.read_table(m30).replace_schema_metadata(None), m30)
    m5 = aggregate_part_path(built_lake, BTC, "M5", Month(2025, 1))
    rewrite(
        m5,
        lambda t: t.set_column(
            t.schema.get_field_index("minutes"), "minutes", pc.multiply(t["minutes"], 2)
        ),
    )
    _, findings = aggregate_findings(built_lake)
    assert {(f.path, f.kind) for f in findings} == {
        (h4, Kind.TS_UNSORTED),
        (d1, Kind.SCHEMA),
        (m30, Kind.PROVENANCE_MISSING),
        (m5, Kind.BUCKET_MINUTES),
    }


HOSTILE = "x $(touch PWNED)"


def _through_a_shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command`` pasted into a real shell, with this venv's ``backfill`` on the PATH."""
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    return subprocess.run(
        ["sh", "-c", command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": path},
    )


def test_hints_are_quoted_for_a_shell(edge_lake_template: Path, tmp_path: Path) -> None:
    """verify's refresh hint and plan --tf's build command, pasted into a shell, name the
    lake and run no substitution from its name (issue 19)."""
    import shutil

    from typer.testing import CliRunner

    from backfill.cli import app

    lake = tmp_path / HOSTILE
    shutil.copytree(edge_lake_template, lake)
    aggregate_lake(AggregateRequest(lake, TIMEFRAMES), now=NOW)
    write_m1(lake, BTC, date(2025, 1, 2), date(2025, 1, 2), fetched_at=LATER, seed=3)
    _, findings = aggregate_findings(lake)
    stale = next(f for f in findings if f.kind is Kind.AGGREGATE_STALE)
    command = stale.detail.split("`")[1]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = _through_a_shell(command, elsewhere)
    assert not list(tmp_path.rglob("PWNED")), "the lake's name ran as a command"
    assert done.returncode == 0, done.stderr
    write_m1(lake, BTC, date(2025, 1, 3), date(2025, 1, 3), fetched_at=LATER, seed=4)
    planned = CliRunner().invoke(
        app,
        [
            "plan",
            "--lake",
            str(lake),
            "--symbols",
            "BTC-USD",
            "--from",
            "2025-01-01",
            "--to",
            "2025-01-31",
            "--tf",
            "H1",
        ],
    )
    [build] = [
        line.split(": ", 1)[1]
        for line in planned.stdout.splitlines()
        if line.startswith("build them: ")
    ]
    assert "--lake" in build
    done = _through_a_shell(build, elsewhere)
    assert not list(tmp_path.rglob("PWNED"))
    assert done.returncode == 0, done.stderr
    assert not list(elsewhere.iterdir()), "it built in the lake, not where it was pasted"


def _column(name: str, change):
    def spoil(table: pa.Table) -> pa.Table:
        values = table[name].to_pylist()
        values[3] = change(table, 3)
        index = table.schema.get_field_index(name)
        return table.set_column(index, name, pa.array(values, table.schema.field(name).type))

    return spoil


@pytest.mark.parametrize(
    ("spoil", "kind"),
    [
        (_column("close", lambda t, i: t["high"][i].as_py() + 1), Kind.OHLC),
        (_column("close", lambda t, i: t["low"][i].as_py() - 1), Kind.OHLC),
        (_column("open", lambda t, i: t["high"][i].as_py() + 1), Kind.OHLC),
        (_column("open", lambda t, i: t["low"][i].as_py() - 1), Kind.OHLC),
        (_column("close", lambda t, i: float("nan")), Kind.NOT_FINITE),
        (_column("high", lambda t, i: float("inf")), Kind.NOT_FINITE),
        (_column("wap", lambda t, i: float("-inf")), Kind.NOT_FINITE),
        (_column("volume", lambda t, i: -1.0), Kind.NEGATIVE_VOLUME),
        (_column("complete", lambda t, i: False), Kind.BUCKET_INCOMPLETE),
        (_column("symbol", lambda t, i: "ETH-USD"), Kind.PARTITION),
    ],
    ids=[
        "close>high",
        "close<low",
        "open>high",
        "open<low",
        "nan",
        "inf",
        "wap-inf",
        "negative-volume",
        "incomplete",
        "other-symbol",
    ],
)
def test_an_aggregate_part_with_bad_contents_is_an_error(built_lake: Path, spoil, kind) -> None:
    path = aggregate_part_path(built_lake, BTC, "H1", Month(2025, 1))
    rewrite(path, spoil)
    report, findings = aggregate_findings(built_lake)
    assert not report.ok
    assert [(f.kind, f.severity, f.path) for f in findings] == [(kind, Severity.ERROR, path)]
    assert "2025-01-01T03:00:00+00:00" in findings[0].detail or kind in (
        Kind.BUCKET_INCOMPLETE,
        Kind.PARTITION,
    )


def test_complete_false_passes_in_a_part_built_with_include_partial(edge_lake: Path) -> None:
    aggregate_lake(AggregateRequest(edge_lake, TIMEFRAMES, include_partial=True), now=NOW)
    d1 = pq.read_table(aggregate_part_path(edge_lake, BTC, "D1", Month(2025, 2)))
    assert False in d1["complete"].to_pylist()  # the partial day's D1 bar
    assert aggregate_findings(edge_lake)[1] == []


def _run(command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "backfill", *command.split()[1:]],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_orphaned_aggregates_are_errors_and_the_refresh_named_removes_them(
    built_lake: Path,
) -> None:
    shutil.rmtree(symbol_dir(built_lake, BTC))  # the M1 folder is gone, H1 etc. are left
    parts = sorted(p for p in built_lake.rglob("part-*.parquet"))
    assert parts
    report = verify_lake(built_lake)
    assert not report.ok and report.parts == len(parts)
    orphans = [f for f in report.findings if f.kind is Kind.AGGREGATE_ORPHAN]
    assert sorted(f.path for f in orphans) == parts
    assert {f.severity for f in orphans} == {Severity.ERROR}
    assert not [f for f in report.findings if f.kind is Kind.AGGREGATE_STALE]  # said once
    h1 = next(f for f in orphans if "timeframe=H1" in str(f.path) and "2025-01" in str(f.path))
    done = _run(h1.detail.split("`")[1])
    assert done.returncode == 0, done.stderr
    assert not h1.path.exists()
    # the whole-lake build removes the rest
    done = _run(f"backfill aggregate --lake {built_lake}")
    assert done.returncode == 0, done.stderr
    assert not list(built_lake.rglob("part-*.parquet"))
    assert not [f for f in verify_lake(built_lake).findings if f.severity is Severity.ERROR]


def test_an_m1_part_holding_another_symbols_rows_is_flagged_and_not_aggregated(
    edge_lake: Path,
) -> None:
    m1 = part_path(edge_lake, BTC, Month(2025, 1))
    table = pq.read_table(m1)
    index = table.schema.get_field_index("symbol")
    relabelled = table.set_column(
        index, table.schema.field(index), pa.array(["ETH-USD"] * table.num_rows, pa.string())
    )
    pq.write_table(relabelled, m1)  # footer (coverage) kept
    report = verify_lake(edge_lake)
    assert (m1, Kind.PARTITION) in {(f.path, f.kind) for f in report.findings}
    result = aggregate_lake(AggregateRequest(edge_lake, TIMEFRAMES), now=NOW)
    # January, and February (its first buckets draw on January 31), fail with the reason
    assert {(f.month, "ETH-USD" in f.reason) for f in result.failed} == {
        (Month(2025, 1), True),
        (Month(2025, 2), True),
    }
    for tf in TIMEFRAMES:
        assert not aggregate_part_path(edge_lake, BTC, tf.name, Month(2025, 1)).exists()
    labels = {
        label
        for p in edge_lake.rglob("part-*.parquet")
        if "timeframe=M1" not in str(p)
        for label in pq.read_table(p, columns=["symbol"])["symbol"].unique().to_pylist()
    }
    assert labels <= {"BTC-USD"}
