"""docs/levels-guide.md's lines reading levels and events (backfill, pandas, DuckDB, Polars), run as
written, and its one-line relabel for strategies that stamp bars by their start."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

import backfill
from backfill.levels.events import EventParams
from backfill.levels.tolerance import Tolerance
from tests.docs import doc_text
from tests.levels.test_examples import at, build, example_c

PAGE = "levels-guide.md"  # docs/levels-guide.md


def readme_block() -> list[str]:
    text = doc_text(PAGE)
    after = text.split("Read them back (each line is run by `tests/levels/test_readers.py`):")[1]
    block = after.split("```python\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


@pytest.fixture
def lake_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    build(
        tmp_path / "lake",
        example_c(),
        date(2025, 7, 14),
        date(2025, 7, 16),
        EventParams(Tolerance("bps", 5.0)),
    )
    monkeypatch.chdir(tmp_path)  # the page's paths are relative: "lake"
    return tmp_path / "lake"


def rows(result: object) -> int:
    if hasattr(result, "fetchall"):
        return len(result.fetchall())  # type: ignore[attr-defined]
    return len(result)  # type: ignore[arg-type]


def test_every_readme_line_reads_both_datasets(lake_dir: Path) -> None:
    lines = readme_block()
    namespace: dict[str, object] = {}
    exec(lines[0], namespace)  # the imports
    exec(lines[1], namespace)
    exec(lines[2], namespace)
    assert namespace["levels"].num_rows == 18  # type: ignore[attr-defined]
    assert namespace["events"].num_rows == 1  # type: ignore[attr-defined]
    counts = [rows(eval(line, namespace)) for line in lines[3:]]
    # levels, events, alternately, per reader: pandas, DuckDB, Polars
    assert counts == [18, 1] * 3


def test_the_relabel_line_stamps_bars_by_their_start(lake_dir: Path) -> None:
    line = re.search(r"`(bars = bars\.set_column\(0, \"ts\".*?)`", doc_text(PAGE)).group(1)
    bars = backfill.read_bars("lake", "BTC-USD", "2025-07-15", "2025-07-15")
    namespace = {"bars": bars, "pa": pa, "pc": pa.compute}
    exec(line, namespace)
    relabelled = namespace["bars"]
    assert relabelled["ts"][0].as_py() == at("2025-07-14T23:59")
    assert relabelled.schema.field("ts").type == bars.schema.field("ts").type
