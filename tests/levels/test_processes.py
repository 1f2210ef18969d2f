"""Two ``levels`` at once, and one killed mid-write: parts are old or new, never half."""

from __future__ import annotations

import multiprocessing
import os
import signal
from datetime import date
from pathlib import Path

import pyarrow.parquet as pq

from backfill.domain import Month
from backfill.lake.paths import temp_glob
from backfill.levels.build import LevelsRequest, levels_lake
from backfill.levels.paths import levels_part_path
from backfill.levels.profiles import PROFILES
from tests.aggregate.helpers import LATER
from tests.levels.helpers import (
    BTC,
    build_child,
    flat_days,
    pause_before_replace_build,
    write_lake,
)

CTX = multiprocessing.get_context("spawn")
WAIT = 60  # seconds: a bound for a broken test, never a pause
JULY = Month(2025, 7)
ALL = tuple(PROFILES.values())


def lake_of(tmp_path: Path, price: float = 100.0) -> Path:
    write_lake(
        tmp_path,
        flat_days(date(2025, 7, 1), date(2025, 7, 6), price),
        date(2025, 7, 1),
        date(2025, 7, 6),
    )
    return tmp_path


def test_two_builds_at_once_leave_whole_parts_and_nothing_to_redo(tmp_path: Path) -> None:
    lake = lake_of(tmp_path)
    start = CTX.Event()
    names = ",".join(PROFILES)
    children = [CTX.Process(target=build_child, args=(lake, start, names)) for _ in range(2)]
    for child in children:
        child.start()
    start.set()
    path = levels_part_path(lake, "us_equity_open", BTC, JULY)
    reads = 0
    while any(child.is_alive() for child in children):
        if path.exists():
            pq.read_table(path)  # every read sees a whole file
            reads += 1
    for child in children:
        child.join(WAIT)
        assert child.exitcode == 0
    # sessions 07-02 … 07-06 whole, and 07-01 without its PD (06-30 not recorded)
    assert pq.read_table(path).num_rows == 5 * 7 + 4
    assert levels_lake(LevelsRequest(lake, ALL)).built == ()


def test_a_build_killed_before_replace_leaves_the_old_part(tmp_path: Path) -> None:
    lake = lake_of(tmp_path)
    assert levels_lake(LevelsRequest(lake)).ok
    path = levels_part_path(lake, "us_equity_open", BTC, JULY)
    before = path.read_bytes()
    write_lake(
        lake,
        flat_days(date(2025, 7, 3), date(2025, 7, 3), 200.0),
        date(2025, 7, 3),
        date(2025, 7, 3),
        fetched_at=LATER,
    )
    paused = CTX.Event()
    child = CTX.Process(target=pause_before_replace_build, args=(lake, paused))
    child.start()
    assert paused.wait(WAIT)
    assert list(path.parent.glob(temp_glob(path)))  # the new part was complete, not in place
    os.kill(child.pid, signal.SIGKILL)
    child.join(WAIT)
    assert path.read_bytes() == before
    # The next build finds it stale, takes the dead one's lock and clears its temp file.
    result = levels_lake(LevelsRequest(lake))
    assert [b.plan.reason.value for b in result.built if b.plan.kind == "levels"] == ["stale"]
    assert 200.0 in pq.read_table(path)["value"].to_pylist()
    assert list(path.parent.glob(temp_glob(path))) == []
