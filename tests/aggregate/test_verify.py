"""``verify`` on aggregate parts: a clean build passes; staleness, misalignment and broken
parts are found, naming the part (and, for a stale one, the command that refreshes it)."""

from __future__ import annotations

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
from backfill.lake.paths import aggregate_part_path
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


def test_a_stale_aggregate_is_a_warning_naming_the_command_that_refreshes_it(
    built_lake: Path,
) -> None:
    write_m1(built_lake, BTC, date(2025, 1, 2), date(2025, 1, 2), fetched_at=LATER, seed=3)
    _, findings = aggregate_findings(built_lake)
    # stale is not wrong, only behind
    assert {f.severity for f in findings} == {Severity.WARNING}
    stale = [f for f in findings if f.kind is Kind.AGGREGATE_STALE]
    assert {f.severity for f in stale} == {Severity.WARNING}
    assert {f.path for f in stale} == {
        aggregate_part_path(built_lake, BTC, tf.name, Month(2025, 1)) for tf in TIMEFRAMES
    }
    command = next(f for f in stale if "timeframe=H1" in str(f.path)).detail.split("`")[1]
    assert command == (
        f"backfill aggregate --lake {built_lake} --symbols BTC-USD --tf H1 "
        "--from 2024-12-31 --to 2025-01-31"
    )
    done = subprocess.run([sys.executable, "-m", "backfill", *command.split()[1:]],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    _, findings = aggregate_findings(built_lake)
    assert {str(f.path) for f in findings if f.kind is Kind.AGGREGATE_STALE} == {
        str(aggregate_part_path(built_lake, BTC, tf.name, Month(2025, 1)))
        for tf in TIMEFRAMES if tf.name != "H1"
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
    rewrite(m5, lambda t: t.set_column(
        t.schema.get_field_index("minutes"), "minutes", pc.multiply(t["minutes"], 2)))
    _, findings = aggregate_findings(built_lake)
    assert {(f.path, f.kind) for f in findings} == {
        (h4, Kind.TS_UNSORTED), (d1, Kind.SCHEMA), (m30, Kind.PROVENANCE_MISSING),
        (m5, Kind.BUCKET_MINUTES),
    }


HOSTILE = "x $(touch PWNED)"


def _through_a_shell(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``command`` pasted into a real shell, with this venv's ``backfill`` on the PATH."""
    path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    return subprocess.run(["sh", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env={"PATH": path})


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
    planned = CliRunner().invoke(app, ["plan", "--lake", str(lake), "--symbols", "BTC-USD",
                                       "--from", "2025-01-01", "--to", "2025-01-31",
                                       "--tf", "H1"])
    [build] = [line.split(": ", 1)[1] for line in planned.stdout.splitlines()
               if line.startswith("build them: ")]
    assert "--lake" in build
    done = _through_a_shell(build, elsewhere)
    assert not list(tmp_path.rglob("PWNED"))
    assert done.returncode == 0, done.stderr
    assert not list(elsewhere.iterdir()), "it built in the lake, not where it was pasted"
