"""The day marks plan reads, and the cache of them kept in ``<lake>/_cache/coverage.json``.

The footers are the truth: whatever the cache holds, ``read_day_marks`` must say what the
footers say now (``read_coverage`` decodes them whole, the oracle).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.domain import MINUTE, DayCoverage, Month, Symbol, day_start
from backfill.lake import coverage_index, footers, store
from backfill.lake.coverage_index import (
    COMPLETE,
    COMPLETE_NO_DATA,
    DayMark,
    cache_path,
    read_day_marks,
)
from backfill.lake.paths import part_path
from backfill.lake.schema import (
    COVERAGE_KEY,
    PART_WRITE_OPTIONS,
    coverage_bits,
    decode_coverage,
    encode_coverage,
)
from tests.lake.helpers import (
    BTC,
    ETH,
    FETCHED,
    bars_at,
    day_bars,
    days_bars,
    read_coverage,
    tmpfs,
)

JULY_1, JULY_2, JULY_3, JULY_4, JULY_5 = (date(2025, 7, d) for d in range(1, 6))
AUG_10 = date(2025, 8, 10)
FIRST, LAST = date(2025, 6, 1), date(2025, 9, 30)


def later() -> int:
    """A clock a minute ahead: every part written by the test is old enough to remember."""
    return time.time_ns() + 60 * 10**9


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    """BTC: 1-2 July whole, 3 July no data (IB said so), 4 July partial, 10 August whole;
    ETH: 1 July whole. No June or September parts."""
    root = tmp_path / "lake"
    store.write_batch(
        root,
        BTC,
        days_bars(BTC, [JULY_1, JULY_2]),
        [JULY_1, JULY_2, JULY_3],
        fetched_at=FETCHED,
        no_data_days=[JULY_3],
    )
    store.write_batch(
        root,
        BTC,
        day_bars(BTC, JULY_4, skip=range(600, 1440)),
        [JULY_4],
        fetched_at=FETCHED,
        partial_days=[JULY_4],
    )
    store.write_batch(root, BTC, day_bars(BTC, AUG_10), [AUG_10], fetched_at=FETCHED)
    store.write_batch(root, ETH, day_bars(ETH, JULY_1), [JULY_1], fetched_at=FETCHED)
    return root


def truth(lake: Path, symbols: list[Symbol], first: date, last: date) -> dict:
    """What the footers say now, in the shape ``read_day_marks`` gives it."""
    return {
        symbol: {d: DayMark(True, c.no_data) for d, c in days.items() if c.complete}
        for symbol, days in read_coverage(lake, symbols, first, last).items()
    }


class FooterCount:
    """How many footers ``read_day_marks`` parsed (it reads them through ``footers``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = footers.read_coverage_record

        def counted(path: Path | str) -> bytes:
            self.count += 1
            return real(path)

        monkeypatch.setattr(footers, "read_coverage_record", counted)

    def take(self) -> int:
        taken, self.count = self.count, 0
        return taken


def test_marks_are_the_complete_days_with_their_no_data_flag(lake: Path) -> None:
    marks = read_day_marks(lake, [BTC, ETH], FIRST, LAST, clock=later)
    assert marks == {
        BTC: {JULY_1: COMPLETE, JULY_2: COMPLETE, JULY_3: COMPLETE_NO_DATA, AUG_10: COMPLETE},
        ETH: {JULY_1: COMPLETE},
    }
    assert marks == truth(lake, [BTC, ETH], FIRST, LAST)


@pytest.mark.parametrize(
    ("first", "last"),
    [
        (JULY_2, JULY_3),
        (JULY_3, AUG_10),
        (date(2025, 7, 31), date(2025, 8, 9)),
        (JULY_1, JULY_1),
        (date(2025, 8, 10), date(2025, 8, 31)),
        (FIRST, date(2025, 6, 30)),
    ],
)
def test_a_range_is_clipped_alike_from_footers_and_from_the_cache(
    lake: Path, first: date, last: date
) -> None:
    read_day_marks(lake, [BTC, ETH], FIRST, LAST, clock=later)  # remembers every part whole
    assert cache_path(lake).is_file()
    expected = truth(lake, [BTC, ETH], first, last)
    assert read_day_marks(lake, [BTC, ETH], first, last, clock=later) == expected
    assert read_day_marks(lake, [BTC, ETH], first, last, remember=False) == expected


def test_a_second_read_parses_no_footer(lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    footers = FooterCount(monkeypatch)
    first_read = read_day_marks(lake, [BTC, ETH], FIRST, LAST, clock=later)
    assert footers.take() == 3  # BTC July and August, ETH July
    assert read_day_marks(lake, [BTC, ETH], FIRST, LAST, clock=later) == first_read
    assert footers.take() == 0


def test_a_part_younger_than_the_racy_window_is_not_remembered(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    footers = FooterCount(monkeypatch)
    newest = os.stat(part_path(lake, ETH, Month(2025, 7)))  # the fixture's last write
    edge = max(newest.st_mtime_ns, newest.st_ctime_ns) + coverage_index.RACY_NS
    read_day_marks(lake, [BTC, ETH], FIRST, LAST, clock=lambda: edge)
    assert footers.take() == 3
    read_day_marks(lake, [BTC, ETH], FIRST, LAST, clock=lambda: edge)
    assert footers.take() == 1, "the older parts are remembered, the newest is read again"
    read_day_marks(lake, [BTC, ETH], FIRST, LAST, clock=lambda: edge + 1)
    assert footers.take() == 1
    read_day_marks(lake, [BTC, ETH], FIRST, LAST, clock=lambda: edge + 1)
    assert footers.take() == 0


def test_a_part_rewritten_by_the_store_is_read_again(lake: Path) -> None:
    read_day_marks(lake, [BTC], FIRST, LAST, clock=later)
    store.write_batch(lake, BTC, day_bars(BTC, JULY_5), [JULY_5], fetched_at=FETCHED)
    store.write_batch(lake, BTC, day_bars(BTC, JULY_4), [JULY_4], fetched_at=FETCHED)
    marks = read_day_marks(lake, [BTC], FIRST, LAST, clock=later)[BTC]
    assert marks[JULY_4] == marks[JULY_5] == COMPLETE
    assert marks == truth(lake, [BTC], FIRST, LAST)[BTC]


def _write_part(path: Path, days: dict[date, bool], pad: int) -> int:
    """A part of one bar a day whose record says which days are complete, its footer padded
    by ``pad`` bytes of metadata; its size."""
    rows = bars_at(BTC, [day_start(d) + MINUTE for d in days])
    coverage = [DayCoverage(d, 1, FETCHED, whole) for d, whole in days.items()]
    metadata = {COVERAGE_KEY: encode_coverage(coverage), b"pad": b"x" * pad}
    pq.write_table(rows.replace_schema_metadata(metadata), path, **PART_WRITE_OPTIONS)
    return path.stat().st_size


def _parts_of_one_size(a: Path, a_days: dict[date, bool], b: Path, b_days: dict[date, bool]):
    """Two parts with these records and the same size in bytes (padding their footers)."""
    b_pads = {_write_part(b, b_days, pad): pad for pad in range(64)}
    for pad in range(64):
        size = _write_part(a, a_days, pad)
        if size in b_pads:
            _write_part(b, b_days, b_pads[size])
            return
    raise AssertionError("no two pads give one size")


def test_a_part_copied_over_with_the_same_size_and_mtime_is_read_again(tmp_path: Path) -> None:
    """``cp -p`` or ``rsync -a`` of another version: size and mtime alone would match."""
    lake = tmp_path / "lake"
    part = part_path(lake, BTC, Month(2025, 7))
    part.parent.mkdir(parents=True)
    copy = tmp_path / "copy.parquet"
    _parts_of_one_size(part, {JULY_1: True, JULY_2: False}, copy, {JULY_1: True, JULY_2: True})
    original = part.stat()
    assert read_day_marks(lake, [BTC], FIRST, LAST, clock=later)[BTC] == {JULY_1: COMPLETE}

    os.utime(copy, ns=(original.st_atime_ns, original.st_mtime_ns))
    os.replace(copy, part)
    assert (part.stat().st_size, part.stat().st_mtime_ns) == (
        original.st_size,
        original.st_mtime_ns,
    )
    marks = read_day_marks(lake, [BTC], FIRST, LAST, clock=later)[BTC]
    assert marks == {JULY_1: COMPLETE, JULY_2: COMPLETE}


def test_a_deleted_part_covers_nothing(lake: Path) -> None:
    read_day_marks(lake, [BTC], FIRST, LAST, clock=later)
    part_path(lake, BTC, Month(2025, 8)).unlink()
    assert read_day_marks(lake, [BTC], FIRST, LAST, clock=later)[BTC] == {
        JULY_1: COMPLETE,
        JULY_2: COMPLETE,
        JULY_3: COMPLETE_NO_DATA,
    }
    assert "month=08" not in cache_path(lake).read_text()


def test_a_part_turned_corrupt_covers_nothing_and_a_mended_one_counts_again(
    lake: Path,
) -> None:
    read_day_marks(lake, [ETH], FIRST, LAST, clock=later)
    part = part_path(lake, ETH, Month(2025, 7))
    good = part.read_bytes()
    part.write_bytes(b"PAR1 not a parquet file")
    assert read_day_marks(lake, [ETH], FIRST, LAST, clock=later)[ETH] == {}
    part.write_bytes(good)
    assert read_day_marks(lake, [ETH], FIRST, LAST, clock=later)[ETH] == {JULY_1: COMPLETE}


@pytest.mark.parametrize(
    "cache",
    [
        b"not json",
        b"[]",
        b'{"version": 99, "parts": {}}',
        b'{"version": 1, "parts": []}',
        b'{"version": 1, "parts": {"symbol=BTC-USD/year=2025/month=07/part-2025-07.parquet":'
        b" [1, 2]}}",
        b"",
    ],
    ids=["garbage", "list", "version", "parts-list", "short-entry", "empty"],
)
def test_a_broken_cache_is_ignored_and_written_anew(lake: Path, cache: bytes) -> None:
    cache_path(lake).parent.mkdir()
    cache_path(lake).write_bytes(cache)
    assert read_day_marks(lake, [BTC, ETH], FIRST, LAST, clock=later) == truth(
        lake, [BTC, ETH], FIRST, LAST
    )
    record = json.loads(cache_path(lake).read_bytes())
    assert record["version"] == coverage_index.CACHE_VERSION
    assert len(record["parts"]) == 3


def test_a_cache_entry_for_a_part_that_changed_is_not_believed(lake: Path) -> None:
    """An entry whose marks lie (hand-edited, or from a bug) is believed only while its
    identity matches: once the part changes, the footer is read."""
    read_day_marks(lake, [ETH], FIRST, LAST, clock=later)
    record = json.loads(cache_path(lake).read_bytes())
    [key] = record["parts"]
    record["parts"][key][-2] = (1 << 32) - 2  # every day of July complete
    cache_path(lake).write_text(json.dumps(record))
    store.write_batch(lake, ETH, day_bars(ETH, JULY_2), [JULY_2], fetched_at=FETCHED)
    assert read_day_marks(lake, [ETH], FIRST, LAST, clock=later)[ETH] == {
        JULY_1: COMPLETE,
        JULY_2: COMPLETE,
    }


def test_a_read_only_cache_folder_is_planned_all_the_same(lake: Path) -> None:
    with tmpfs(lake / "_cache", "ro", "size=64k"):
        marks = read_day_marks(lake, [BTC, ETH], FIRST, LAST, clock=later)
        assert not cache_path(lake).exists()
    assert marks == truth(lake, [BTC, ETH], FIRST, LAST)


def test_no_lake_no_cache(tmp_path: Path) -> None:
    lake = tmp_path / "none"
    assert read_day_marks(lake, [BTC], FIRST, LAST, clock=later) == {BTC: {}}
    assert not lake.exists()


# -- the footers read by helper processes (a fresh process: pyarrow not imported yet) -------

_HELPERS = textwrap.dedent(
    """
    import json, os, sys, time
    from datetime import date
    from backfill.domain import Symbol
    from backfill.lake import coverage_index as ci

    lake, mode = sys.argv[1], sys.argv[2]
    ci.HELPERS_FROM = 2
    if mode != "few-misses-one-helper":
        ci.PER_HELPER, ci.CHUNK = 1, 1
    parent, chunks, real_read = os.getpid(), ci._read_chunks, ci._read_for_parent

    def helper(misses, taken, sender):
        try:  # the first helper to start is the one that fails, if one does
            os.close(os.open(os.path.join(lake, "first-helper"), os.O_CREAT | os.O_EXCL))
            first = True
        except FileExistsError:
            first = False
        if first and mode == "a-helper-dies-holding-the-counter":
            taken.get_lock().acquire()
            os._exit(1)
        if first and mode == "a-helper-dies":
            next(chunks(misses, taken))
            os._exit(1)  # with its part taken and not sent
        real_read(misses, taken, ReportingSender(sender))

    class ReportingSender:
        def __init__(self, sender):
            self.sender = sender

        def send(self, rows):
            with open(os.path.join(lake, f"helper-{os.getpid()}"), "w") as f:
                json.dump({"rows": sum(len(marks) for _, marks in rows),
                           "imported": [m for m in ("numpy", "pyarrow.compute", "filelock")
                                        if sys.modules.get(m) is not None]}, f)
            self.sender.send(rows)

        def close(self):
            self.sender.close()

    ci._read_for_parent = helper
    symbols = [Symbol("BTC", "USD"), Symbol("ETH", "USD")]
    marks = ci.read_day_marks(lake, symbols, date(2025, 6, 1), date(2025, 9, 30),
                              remember=False)
    print(json.dumps({
        "marks": {str(s): {d.isoformat(): [m.complete, m.no_data] for d, m in days.items()}
                  for s, days in marks.items()},
        "parent_imported_pyarrow": "pyarrow" in sys.modules}))
    """
)


@pytest.mark.parametrize(
    "mode",
    [
        "helpers-read-all",
        "few-misses-one-helper",
        "a-helper-dies",
        "a-helper-dies-holding-the-counter",
    ],
)
def test_footers_read_by_helpers_say_what_one_process_reads(lake: Path, mode: str) -> None:
    """Helpers read the footers and plan's own process imports no pyarrow (nor they numpy,
    pyarrow.compute or filelock: only the footer reader); what a helper that died did not
    send, the process reads itself."""
    done = subprocess.run(
        [sys.executable, "-c", _HELPERS, str(lake), mode],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = json.loads(done.stdout)
    assert out["marks"] == {
        str(s): {d.isoformat(): [m.complete, m.no_data] for d, m in days.items()}
        for s, days in truth(lake, [BTC, ETH], FIRST, LAST).items()
    }
    reports = [json.loads(p.read_text()) for p in lake.glob("helper-*")]
    assert [r["imported"] for r in reports if r["imported"]] == [], "only the footer reader"
    if mode in ("helpers-read-all", "few-misses-one-helper"):
        assert sum(r["rows"] for r in reports) == 3  # BTC July and August, ETH July
        assert not out["parent_imported_pyarrow"]
        assert len(reports) == (
            1
            if mode == "few-misses-one-helper"
            else min(3, len(os.sched_getaffinity(0)), coverage_index.HELPERS)
        )
    else:
        assert out["parent_imported_pyarrow"], "the parent read what the dead helper took"


def test_a_schema_drifted_part_covers_nothing(lake: Path) -> None:
    part = part_path(lake, ETH, Month(2025, 7))
    table = pq.read_table(part)
    pq.write_table(table.drop_columns(["wap"]).replace_schema_metadata(table.schema.metadata), part)
    assert read_day_marks(lake, [ETH], FIRST, LAST, clock=later)[ETH] == {}


# -- the record read lightly: the same verdicts as decoding it whole --------------------------

_DAY = {"rows": 5, "fetched_at": "2025-08-01T00:00:00+00:00", "complete": True}


@pytest.mark.parametrize(
    "record",
    [
        {"version": 2, "days": {}},
        {"days": {}},
        {"version": 1},
        {"version": 1, "days": []},
        {"version": 1, "days": {"2025-07-32": _DAY}},
        {"version": 1, "days": {"2025-07-01": {**_DAY, "rows": "many"}}},
        {"version": 1, "days": {"2025-07-01": {**_DAY, "fetched_at": "yesterday"}}},
        {"version": 1, "days": {"2025-07-01": {"rows": 5, "fetched_at": _DAY["fetched_at"]}}},
        {"version": 1, "days": {"2025-07-01": None}},
        [],
    ],
    ids=[
        "version",
        "no-version",
        "no-days",
        "days-list",
        "bad-day",
        "rows",
        "fetched-at",
        "no-complete",
        "day-null",
        "list",
    ],
)
def test_a_record_decoding_refuses_is_refused_when_read_lightly(record: object) -> None:
    raw = json.dumps(record).encode()
    with pytest.raises((ValueError, KeyError, TypeError, AttributeError)):  # what store catches
        decode_coverage(raw)
    with pytest.raises(ValueError):
        coverage_bits(raw, 2025, 7)


@given(st.dictionaries(st.integers(0, 70), st.tuples(st.booleans(), st.booleans())))
def test_light_reading_gives_the_complete_days_of_the_month(days: dict) -> None:
    """Days around July (June's last, August's first) are in the record but not July's."""
    start = date(2025, 6, 1)
    coverage = [
        DayCoverage(start + timedelta(days=i), 1, FETCHED, whole, empty)
        for i, (whole, empty) in days.items()
    ]
    raw = encode_coverage(coverage)
    complete, no_data = coverage_bits(raw, 2025, 7)
    decoded = decode_coverage(raw)
    july = {d: c for d, c in decoded.items() if (d.year, d.month) == (2025, 7) and c.complete}
    assert complete == sum(1 << d.day for d in july)
    assert no_data == sum(1 << d.day for d, c in july.items() if c.no_data)


# -- a footer read from raw bytes: a damaged part is CorruptPart, never anything else -------


@pytest.fixture(scope="module")
def good_part(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A real part's bytes and its coverage record."""
    root = tmp_path_factory.mktemp("good")
    [write] = store.write_batch(
        root, BTC, days_bars(BTC, [JULY_1, JULY_2]), [JULY_1, JULY_2], fetched_at=FETCHED
    )
    return write.path.read_bytes(), store.read_coverage_record(write.path)


@given(
    cut=st.integers(0, 10**6),
    flips=st.lists(st.tuples(st.integers(1, 4096), st.integers(1, 255)), max_size=4),
)
@settings(max_examples=300, deadline=None)
def test_a_damaged_footer_is_a_corrupt_part_and_nothing_else(
    good_part: tuple[bytes, bytes],
    tmp_path_factory: pytest.TempPathFactory,
    cut: int,
    flips: list[tuple[int, int]],
) -> None:
    """Truncated anywhere, or a few bytes of its tail changed (as a torn copy or a bad disk
    leaves a file): reading the footer gives a record or ``CorruptPart``, never another
    error; the untouched part gives its record."""
    original, record = good_part
    data = bytearray(original[: len(original) - cut % (len(original) + 1)])
    for back, xor in flips:
        if back <= len(data):
            data[-back] ^= xor
    path = tmp_path_factory.mktemp("damaged") / "part.parquet"
    path.write_bytes(bytes(data))
    try:
        read = store.read_coverage_record(path)
    except store.CorruptPart:
        assert bytes(data) != original
        return
    assert isinstance(read, bytes)
    if bytes(data) == original:
        assert read == record


# -- a part replaced while plan reads it -------------------------------------------------


def test_a_part_replaced_between_its_stat_and_its_footer_is_read_again(
    lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run replaces a part just as plan has read its footer: what plan read is of the old
    part, so it must not be remembered under the new part's identity."""
    real = footers.read_coverage_record
    replaced: list[str] = []

    def read_then_replace(path: Path | str) -> bytes:
        record = real(path)
        if not replaced:
            replaced.append(str(path))
            store.write_batch(lake, ETH, day_bars(ETH, JULY_2), [JULY_2], fetched_at=FETCHED)
        return record

    monkeypatch.setattr(footers, "read_coverage_record", read_then_replace)
    assert read_day_marks(lake, [ETH], FIRST, LAST, clock=later)[ETH] == {JULY_1: COMPLETE}
    assert replaced
    assert read_day_marks(lake, [ETH], FIRST, LAST, clock=later)[ETH] == {
        JULY_1: COMPLETE,
        JULY_2: COMPLETE,
    }


def test_a_part_at_a_time_is_read_here_not_by_a_helper_each(lake: Path) -> None:
    """``held_scope`` reads each symbol's first part alone: a helper each (a fork and
    pyarrow's import every time) would cost a second over 100 symbols."""
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from backfill.lake import coverage_index as ci

        def no_helper(*args):
            raise SystemExit("a helper was forked")

        ci._read_for_parent = no_helper
        symbols, first = ci.held_scope(Path(sys.argv[1]))
        print(len(symbols), first)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(lake)], capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.split() == ["2", "2025-07-01"]
