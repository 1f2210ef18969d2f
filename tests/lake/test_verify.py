"""verify: a clean lake passes; each defect planted in a copy is found and named."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from backfill.domain import UTC, BadInput, DayCoverage, Month, day_start, missing_minute_ranges
from backfill.lake import store
from backfill.lake.paths import part_path, temp_path
from backfill.lake.schema import COVERAGE_KEY, decode_coverage, encode_coverage
from backfill.lake.verify import (
    DayGaps,
    Finding,
    Kind,
    Severity,
    VerifyReport,
    check_part,
    minute_runs_by_day,
    unfetched_runs,
    verify_lake,
)
from tests.lake.conftest import BTC_DAYS
from tests.lake.helpers import BTC, ETH, FETCHED, SCHEMA_DRIFTS, bars_at, day_bars

JULY = Month(2025, 7)
D1, D2, D3 = BTC_DAYS


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return day_start(day) + timedelta(hours=hour, minutes=minute)


def rewrite(
    path: Path, spoil: Callable[[pa.Table], pa.Table], metadata: dict[bytes, bytes] | None = None
) -> None:
    """Plant a defect: rewrite a part's rows, keeping its footer unless told otherwise."""
    table = pq.read_table(path)
    kept = table.schema.metadata if metadata is None else metadata
    pq.write_table(spoil(table.replace_schema_metadata(None)).replace_schema_metadata(kept), path)


def set_rows(table: pa.Table, column: str, rows: dict[int, object]) -> pa.Table:
    values = table[column].to_pylist()
    for index, value in rows.items():
        values[index] = value
    field = table.schema.field(column).with_nullable(None in values)
    return table.set_column(
        table.schema.get_field_index(column), field, pa.array(values, field.type)
    )


def row_of(table: pa.Table, when: datetime) -> int:
    return table["ts"].to_pylist().index(when)


def errors(report: VerifyReport) -> list[Finding]:
    return [f for f in report.findings if f.severity is Severity.ERROR]


def only_error(report: VerifyReport, kind: Kind) -> Finding:
    found = [f for f in errors(report) if f.kind is kind]
    assert found, f"no {kind.value} in {[f.kind.value for f in report.findings]}"
    return found[0]


def btc_part(lake: Path) -> Path:
    return part_path(lake, BTC, JULY)


# ------------------------------------------------------------------ the clean lake


def test_a_clean_lake_passes_with_its_gaps_as_warnings(clean_lake: Path) -> None:
    report = verify_lake(clean_lake)
    assert report.ok and errors(report) == []
    assert report.parts == 3
    # One gap warning per symbol: its first ranges, and per day the counts.
    [gap] = [f for f in report.findings if f.kind is Kind.GAP]
    assert gap.severity is Severity.WARNING
    assert (gap.symbol, gap.day, gap.path) == (BTC, None, None)
    assert gap.minutes == ((at(D2, 10, 0), at(D2, 10, 4)), (at(D2, 23, 59), at(D2, 23, 59)))
    assert (gap.ranges_total, gap.minutes_total, gap.truncated) == (2, 6, False)
    assert gap.days == (DayGaps(D2, 6, 2),)
    # --gaps: one per day, naming its part.
    [day_gap] = [f for f in verify_lake(clean_lake, gaps=True).findings if f.kind is Kind.GAP]
    assert (day_gap.symbol, day_gap.day, day_gap.path) == (BTC, D2, btc_part(clean_lake))
    assert (day_gap.minutes, day_gap.days) == (gap.minutes, ())
    btc, eth = report.symbols
    assert (btc.symbol, btc.first, btc.last) == (BTC, D1, D3)
    assert (btc.days, btc.days_complete, btc.days_missing) == (3, 3, 0)
    assert (btc.rows, btc.gaps, btc.gap_minutes) == (3 * 1440 - 6, 2, 6)
    assert (eth.symbol, eth.first, eth.last, eth.parts) == (
        ETH,
        date(2025, 7, 31),
        date(2025, 8, 1),
        2,
    )


def test_scope_by_symbols_and_range(clean_lake: Path) -> None:
    report = verify_lake(clean_lake, [ETH], date(2025, 8, 1), date(2025, 8, 1))
    assert [s.symbol for s in report.symbols] == [ETH]
    assert report.parts == 1  # the July part is outside the range
    assert report.symbols[0].rows == 1440


def test_bad_input_is_refused(tmp_path: Path, clean_lake: Path) -> None:
    with pytest.raises(BadInput, match="does not exist"):
        verify_lake(tmp_path / "nowhere")
    with pytest.raises(BadInput, match="after"):
        verify_lake(clean_lake, None, D3, D1)


# ------------------------------------------------------------------ planted defects


def test_an_unreadable_part(clean_lake: Path) -> None:
    path = btc_part(clean_lake)
    path.write_bytes(path.read_bytes()[:1000])
    report = verify_lake(clean_lake)
    finding = only_error(report, Kind.UNREADABLE)
    assert finding.path == path
    # Its days are unknown now: for the asked range they are never fetched.
    ranged = verify_lake(clean_lake, [BTC], D1, D3)
    assert only_error(ranged, Kind.NOT_FETCHED).minutes == ((at(D1, 0), at(D3, 23, 59)),)


@pytest.mark.parametrize("spoil", list(SCHEMA_DRIFTS.values()), ids=list(SCHEMA_DRIFTS))
def test_schema_drift(clean_lake: Path, spoil: Callable[[pa.Table], pa.Table]) -> None:
    rewrite(btc_part(clean_lake), spoil)
    finding = only_error(verify_lake(clean_lake), Kind.SCHEMA)
    assert finding.path == btc_part(clean_lake)


def test_rows_out_of_order(clean_lake: Path) -> None:
    def swap(t: pa.Table) -> pa.Table:
        i, j = row_of(t, at(D3, 8, 0)), row_of(t, at(D3, 8, 1))
        order = list(range(t.num_rows))
        order[i], order[j] = j, i
        return t.take(order)

    rewrite(btc_part(clean_lake), swap)
    finding = only_error(verify_lake(clean_lake), Kind.TS_UNSORTED)
    assert (finding.day, finding.minutes) == (D3, ((at(D3, 8, 0), at(D3, 8, 0)),))


def test_duplicate_ts(clean_lake: Path) -> None:
    def duplicate(t: pa.Table) -> pa.Table:
        i = row_of(t, at(D1, 12, 30))
        return pa.concat_tables([t, t.slice(i, 2)]).sort_by("ts")

    rewrite(btc_part(clean_lake), duplicate)
    report = verify_lake(clean_lake)
    finding = only_error(report, Kind.TS_DUPLICATE)
    assert (finding.day, finding.minutes) == (D1, ((at(D1, 12, 30), at(D1, 12, 31)),))
    rows = only_error(report, Kind.COVERAGE_ROWS)
    assert rows.day == D1 and "1440" in rows.detail and "1442" in rows.detail


def test_ts_outside_the_month(clean_lake: Path) -> None:
    stray = bars_at(BTC, [datetime(2025, 8, 1, 0, 0, tzinfo=UTC)])
    rewrite(btc_part(clean_lake), lambda t: pa.concat_tables([t, stray]))
    finding = only_error(verify_lake(clean_lake), Kind.TS_OUTSIDE_MONTH)
    assert finding.day == date(2025, 8, 1)
    assert finding.path == btc_part(clean_lake)


def test_ts_not_on_a_minute(clean_lake: Path) -> None:
    def shift(t: pa.Table) -> pa.Table:
        return set_rows(t, "ts", {row_of(t, at(D2, 3, 0)): at(D2, 3, 0) + timedelta(seconds=30)})

    rewrite(btc_part(clean_lake), shift)
    finding = only_error(verify_lake(clean_lake), Kind.TS_NOT_MINUTE)
    assert (finding.day, finding.minutes) == (D2, ((at(D2, 3, 0), at(D2, 3, 0)),))


def test_ohlc_insanity(clean_lake: Path) -> None:
    def spoil(t: pa.Table) -> pa.Table:
        first = row_of(t, at(D1, 10, 0))
        t = set_rows(t, "low", {first + k: 1e9 for k in range(3)})  # low above open
        return set_rows(t, "high", {row_of(t, at(D3, 0, 0)): 50.0})  # high below close

    rewrite(btc_part(clean_lake), spoil)
    found = [f for f in errors(verify_lake(clean_lake)) if f.kind is Kind.OHLC]
    assert [(f.day, f.minutes) for f in found] == [
        (D1, ((at(D1, 10, 0), at(D1, 10, 2)),)),
        (D3, ((at(D3, 0, 0), at(D3, 0, 0)),)),
    ]


@pytest.mark.parametrize(
    ("column", "value"),
    [("high", float("inf")), ("low", float("-inf")), ("close", float("nan")),
     ("wap", float("nan")), ("open", float("-inf")), ("volume", float("nan"))],
)  # fmt: skip
def test_non_finite_prices(clean_lake: Path, column: str, value: float) -> None:
    # high=+inf and low=-inf keep low <= open, close <= high: only a finiteness check sees them.
    rewrite(btc_part(clean_lake), lambda t: set_rows(t, column, {row_of(t, at(D2, 9, 30)): value}))
    report = verify_lake(clean_lake)
    [finding] = errors(report)
    assert (finding.kind, finding.day) == (Kind.NOT_FINITE, D2)
    assert finding.minutes == ((at(D2, 9, 30), at(D2, 9, 30)),)
    assert column in finding.detail


def test_negative_volume(clean_lake: Path) -> None:
    rewrite(btc_part(clean_lake), lambda t: set_rows(t, "volume", {row_of(t, at(D1, 5)): -1.0}))
    finding = only_error(verify_lake(clean_lake), Kind.NEGATIVE_VOLUME)
    assert (finding.day, finding.minutes) == (D1, ((at(D1, 5), at(D1, 5)),))


@pytest.mark.parametrize(
    ("column", "value"), [("symbol", "ETH-USD"), ("source", "binance"), ("market", "stocks")]
)
def test_columns_that_disagree_with_the_path(clean_lake: Path, column: str, value: str) -> None:
    rewrite(btc_part(clean_lake), lambda t: set_rows(t, column, {row_of(t, at(D2, 7)): value}))
    finding = only_error(verify_lake(clean_lake), Kind.PARTITION)
    assert (finding.day, finding.minutes) == (D2, ((at(D2, 7), at(D2, 7)),))
    assert column in finding.detail and value in finding.detail


def test_a_column_that_should_be_constant(clean_lake: Path) -> None:
    rewrite(btc_part(clean_lake), lambda t: set_rows(t, "exchange", {0: "BINANCE"}))
    assert "exchange" in only_error(verify_lake(clean_lake), Kind.NOT_CONSTANT).detail


def test_nulls(clean_lake: Path) -> None:
    rewrite(btc_part(clean_lake), lambda t: set_rows(t, "wap", {3: None}))
    assert "wap: 1" in only_error(verify_lake(clean_lake), Kind.NULLS).detail


def test_missing_and_malformed_coverage(clean_lake: Path) -> None:
    path = btc_part(clean_lake)
    rewrite(path, lambda t: t, metadata={b"other": b"x"})
    assert only_error(verify_lake(clean_lake), Kind.COVERAGE_MISSING).path == path
    rewrite(path, lambda t: t, metadata={COVERAGE_KEY: b"{not json"})
    assert only_error(verify_lake(clean_lake), Kind.COVERAGE_MALFORMED).path == path


def edit_coverage(path: Path, edit: Callable[[dict[date, DayCoverage]], None]) -> None:
    coverage = decode_coverage(pq.read_schema(path).metadata[COVERAGE_KEY])
    edit(coverage)
    rewrite(path, lambda t: t, metadata={COVERAGE_KEY: encode_coverage(coverage.values())})


def test_coverage_row_counts_that_disagree_with_the_rows(clean_lake: Path) -> None:
    edit_coverage(btc_part(clean_lake), lambda c: c.update({D2: replace(c[D2], rows=1440)}))
    finding = only_error(verify_lake(clean_lake), Kind.COVERAGE_ROWS)
    assert finding.day == D2
    assert "1440" in finding.detail and "1434" in finding.detail


def test_rows_on_a_day_the_coverage_omits(clean_lake: Path) -> None:
    edit_coverage(btc_part(clean_lake), lambda c: c.pop(D3))
    report = verify_lake(clean_lake, [BTC], D1, D3)
    finding = only_error(report, Kind.UNCOVERED_ROWS)
    assert (finding.day, finding.minutes) == (D3, ((at(D3, 0), at(D3, 23, 59)),))
    assert only_error(report, Kind.NOT_FETCHED).day == D3


def test_a_coverage_day_outside_the_month(clean_lake: Path) -> None:
    august = date(2025, 8, 2)
    edit_coverage(
        btc_part(clean_lake), lambda c: c.update({august: DayCoverage(august, 0, FETCHED, True)})
    )
    assert only_error(verify_lake(clean_lake), Kind.COVERAGE_OUTSIDE_MONTH).day == august


def test_days_never_fetched_in_the_asked_range(clean_lake: Path) -> None:
    report = verify_lake(clean_lake, [BTC], date(2025, 6, 29), date(2025, 7, 5))
    found = [f for f in errors(report) if f.kind is Kind.NOT_FETCHED]
    assert [(f.day, f.minutes) for f in found] == [
        (date(2025, 6, 29), ((at(date(2025, 6, 29), 0), at(date(2025, 6, 30), 23, 59)),)),
        (date(2025, 7, 4), ((at(date(2025, 7, 4), 0), at(date(2025, 7, 5), 23, 59)),)),
    ]
    assert (report.symbols[0].days, report.symbols[0].days_missing) == (7, 4)


def test_an_asked_symbol_with_no_parts(clean_lake: Path) -> None:
    sol = BTC.parse("SOL-USD")
    assert only_error(verify_lake(clean_lake, [sol]), Kind.NO_DATA).symbol == sol
    ranged = verify_lake(clean_lake, [sol], D1, D2)
    assert only_error(ranged, Kind.NOT_FETCHED).day == D1


# ------------------------------------------------------------------ warnings


def test_partial_and_empty_days_are_warnings(clean_lake: Path) -> None:
    today = date(2025, 7, 10)
    fetched = at(today, 6, 30)
    batch = bars_at(BTC, [at(today, 0, m) for m in range(0, 390) if m != 100])
    empty = [date(2025, 7, d) for d in range(4, 10)]  # fetched, no bars (a listing gap)
    store.write_batch(
        clean_lake, BTC, batch, [*empty, today], fetched_at=fetched, partial_days=[today]
    )
    report = verify_lake(clean_lake, [BTC], D1, today, gaps=True)
    kinds = {(f.kind, f.day) for f in report.findings if f.severity is Severity.WARNING}
    assert {(Kind.PARTIAL_DAY, today), *((Kind.EMPTY_DAY, d) for d in empty)} <= kinds
    [gap] = [f for f in report.findings if f.kind is Kind.GAP and f.day == today]
    # Only the minutes before the fetch are expected: 01:40 is missing, 06:30 on is not yet due.
    assert gap.minutes == ((at(today, 1, 40), at(today, 1, 40)),)
    assert report.symbols[0].days_partial == 1
    assert report.ok


def test_leftovers_of_crashes_are_warnings(clean_lake: Path) -> None:
    path = btc_part(clean_lake)
    temp_path(path).write_bytes(b"half")
    quarantined = path.with_name("_corrupt-part-2025-07.parquet.20250801T000000000000Z.bad")
    quarantined.write_bytes(b"junk")
    report = verify_lake(clean_lake)
    assert report.ok
    kinds = {(f.kind, f.path) for f in report.findings}
    assert (Kind.STALE_TEMP, temp_path(path)) in kinds
    assert (Kind.QUARANTINED, quarantined) in kinds


# ------------------------------------------------------------------ second cases
# Every check stands behind at least two tests: a different defect, part or shape here.

AUG_1 = date(2025, 8, 1)


def eth_august(lake: Path) -> Path:
    return part_path(lake, ETH, Month(2025, 8))


def kinds_of(report: VerifyReport) -> set[Kind]:
    return {f.kind for f in report.findings}


def test_nulls_in_another_column_are_counted_per_column(clean_lake: Path) -> None:
    rewrite(eth_august(clean_lake), lambda t: set_rows(t, "close", {10: None, 700: None}))
    finding = only_error(verify_lake(clean_lake), Kind.NULLS)
    assert finding.path == eth_august(clean_lake)
    assert finding.detail == "null values (close: 2)"


def test_a_row_moved_to_the_front_goes_backwards(clean_lake: Path) -> None:
    # The day's last bar first: the break is where the rest of the day starts.
    rewrite(eth_august(clean_lake), lambda t: t.take([t.num_rows - 1, *range(t.num_rows - 1)]))
    finding = only_error(verify_lake(clean_lake), Kind.TS_UNSORTED)
    assert (finding.path, finding.day) == (eth_august(clean_lake), AUG_1)
    assert finding.minutes == ((at(AUG_1, 0), at(AUG_1, 0)),)


def test_the_last_bar_twice_is_a_duplicate_not_disorder(clean_lake: Path) -> None:
    rewrite(eth_august(clean_lake), lambda t: pa.concat_tables([t, t.slice(t.num_rows - 1)]))
    report = verify_lake(clean_lake)
    finding = only_error(report, Kind.TS_DUPLICATE)
    assert (finding.path, finding.day) == (eth_august(clean_lake), AUG_1)
    assert finding.minutes == ((at(AUG_1, 23, 59), at(AUG_1, 23, 59)),)
    assert Kind.TS_UNSORTED not in kinds_of(report)


def test_ts_before_the_month(clean_lake: Path) -> None:
    june_30 = date(2025, 6, 30)
    stray = bars_at(BTC, [at(june_30, 23, 58), at(june_30, 23, 59)])
    rewrite(btc_part(clean_lake), lambda t: pa.concat_tables([stray, t]))
    finding = only_error(verify_lake(clean_lake), Kind.TS_OUTSIDE_MONTH)
    assert (finding.day, finding.minutes) == (
        june_30,
        ((at(june_30, 23, 58), at(june_30, 23, 59)),),
    )


def test_ts_a_microsecond_off_the_minute_on_two_days(clean_lake: Path) -> None:
    def shift(t: pa.Table) -> pa.Table:
        off = timedelta(microseconds=1)
        return set_rows(
            t,
            "ts",
            {row_of(t, at(D1, 5)): at(D1, 5) + off, row_of(t, at(D3, 17)): at(D3, 17) + off},
        )

    rewrite(btc_part(clean_lake), shift)
    found = [f for f in errors(verify_lake(clean_lake)) if f.kind is Kind.TS_NOT_MINUTE]
    assert [(f.day, f.minutes) for f in found] == [
        (D1, ((at(D1, 5), at(D1, 5)),)),
        (D3, ((at(D3, 17), at(D3, 17)),)),
    ]


def test_ohlc_high_below_the_close(clean_lake: Path) -> None:
    rewrite(eth_august(clean_lake), lambda t: set_rows(t, "high", {720: 1.0, 721: 1.0}))
    finding = only_error(verify_lake(clean_lake), Kind.OHLC)
    assert (finding.path, finding.day) == (eth_august(clean_lake), AUG_1)
    assert finding.minutes == ((at(AUG_1, 12, 0), at(AUG_1, 12, 1)),)


def test_a_tiny_negative_volume_on_another_part(clean_lake: Path) -> None:
    # NaN volume is not_finite now (test_non_finite_prices); the second case stays negative.
    rewrite(eth_august(clean_lake), lambda t: set_rows(t, "volume", {61: -1e-9}))
    finding = only_error(verify_lake(clean_lake), Kind.NEGATIVE_VOLUME)
    assert (finding.path, finding.day) == (eth_august(clean_lake), AUG_1)
    assert finding.minutes == ((at(AUG_1, 1, 1), at(AUG_1, 1, 1)),)


def test_what_to_show_should_be_constant(clean_lake: Path) -> None:
    rewrite(eth_august(clean_lake), lambda t: set_rows(t, "what_to_show", {5: "TRADES"}))
    finding = only_error(verify_lake(clean_lake), Kind.NOT_CONSTANT)
    assert finding.path == eth_august(clean_lake)
    assert finding.detail == "what_to_show takes several values ['AGGTRADES', 'TRADES']"


def test_a_footer_with_no_metadata_at_all(clean_lake: Path) -> None:
    rewrite(eth_august(clean_lake), lambda t: t, metadata={})
    report = verify_lake(clean_lake)
    assert only_error(report, Kind.COVERAGE_MISSING).path == eth_august(clean_lake)
    assert Kind.COVERAGE_MALFORMED not in kinds_of(report)


def test_coverage_json_with_a_day_lacking_its_row_count(clean_lake: Path) -> None:
    path = eth_august(clean_lake)
    record = json.loads(pq.read_schema(path).metadata[COVERAGE_KEY])
    del record["days"]["2025-08-01"]["rows"]
    rewrite(path, lambda t: t, metadata={COVERAGE_KEY: json.dumps(record).encode()})
    report = verify_lake(clean_lake)
    assert only_error(report, Kind.COVERAGE_MALFORMED).path == path
    assert Kind.COVERAGE_MISSING not in kinds_of(report)


def test_a_coverage_day_before_the_month(clean_lake: Path) -> None:
    june_30 = date(2025, 6, 30)
    edit_coverage(
        btc_part(clean_lake),
        lambda c: c.update({june_30: DayCoverage(june_30, 1440, FETCHED, True)}),
    )
    finding = only_error(verify_lake(clean_lake), Kind.COVERAGE_OUTSIDE_MONTH)
    assert (finding.day, finding.path) == (june_30, btc_part(clean_lake))


def test_a_part_whose_coverage_lists_no_day(clean_lake: Path) -> None:
    edit_coverage(eth_august(clean_lake), lambda c: c.pop(AUG_1))
    finding = only_error(verify_lake(clean_lake, [ETH]), Kind.UNCOVERED_ROWS)
    assert (finding.path, finding.day) == (eth_august(clean_lake), AUG_1)
    assert finding.minutes == ((at(AUG_1, 0), at(AUG_1, 23, 59)),)


def test_only_the_asked_symbol_without_parts_has_no_data(clean_lake: Path) -> None:
    sol = BTC.parse("SOL-USD")
    report = verify_lake(clean_lake, [BTC, sol])
    assert [f.symbol for f in report.findings if f.kind is Kind.NO_DATA] == [sol]
    assert not report.ok


def test_a_partial_day_with_every_minute_before_the_fetch_is_a_warning_without_gaps(
    clean_lake: Path,
) -> None:
    day = date(2025, 8, 2)
    fetched = at(day, 2, 0)
    batch = bars_at(ETH, [at(day, 0, m) for m in range(120)])
    store.write_batch(clean_lake, ETH, batch, [day], fetched_at=fetched, partial_days=[day])
    report = verify_lake(clean_lake, [ETH])
    warnings = {(f.kind, f.day) for f in report.findings if f.severity is Severity.WARNING}
    assert warnings == {(Kind.PARTIAL_DAY, day)}
    assert report.ok and report.symbols[0].days_partial == 1


def test_an_empty_day_alone_is_a_warning(clean_lake: Path) -> None:
    day = date(2025, 8, 2)
    store.write_batch(clean_lake, ETH, bars_at(ETH, []), [day], fetched_at=FETCHED)
    report = verify_lake(clean_lake, [ETH], AUG_1, AUG_1)
    assert Kind.EMPTY_DAY not in kinds_of(report), "outside the asked range"
    report = verify_lake(clean_lake, [ETH])
    warnings = {(f.kind, f.day) for f in report.findings if f.severity is Severity.WARNING}
    assert warnings == {(Kind.EMPTY_DAY, day)}
    assert report.ok


def test_a_quarantined_part_beside_another_symbols_part(clean_lake: Path) -> None:
    quarantined = eth_august(clean_lake).with_name(
        "_corrupt-part-2025-08.parquet.20250901T000000000000Z.bad"
    )
    quarantined.write_bytes(b"junk")
    report = verify_lake(clean_lake, [ETH])
    assert report.ok
    assert [
        (f.severity, f.symbol, f.path) for f in report.findings if f.kind is Kind.QUARANTINED
    ] == [(Severity.WARNING, ETH, quarantined)]


def test_a_stale_temp_file_is_told_only_for_a_part_in_scope(clean_lake: Path) -> None:
    july = part_path(clean_lake, ETH, JULY)
    stale = july.with_name(f".{july.name}.999999.tmp")  # a writer's pid, long dead
    stale.write_bytes(b"half")
    assert Kind.STALE_TEMP not in kinds_of(verify_lake(clean_lake, [ETH], AUG_1, AUG_1))
    report = verify_lake(clean_lake, [ETH])
    assert report.ok
    assert [(f.severity, f.path) for f in report.findings if f.kind is Kind.STALE_TEMP] == [
        (Severity.WARNING, stale)
    ]


# ------------------------------------------------------------------ JSON shape

FINDING_KEYS = {
    "severity", "kind", "symbol", "path", "day", "detail", "minutes", "ranges_total",
    "minutes_total", "truncated",
}  # fmt: skip
SYMBOL_KEYS = {
    "symbol", "from", "to", "parts", "days", "days_complete", "days_partial", "days_missing",
    "days_no_data", "days_before_listing", "head", "rows", "gaps", "gap_minutes", "gap_days",
    "errors", "warnings",
}  # fmt: skip
TOP_KEYS = {
    "version", "lake", "from", "to", "ok", "errors", "warnings", "parts", "symbols", "findings",
}  # fmt: skip


def test_json_document_has_the_documented_shape(clean_lake: Path) -> None:
    rewrite(btc_part(clean_lake), lambda t: set_rows(t, "volume", {0: -1.0}))
    document = json.loads(json.dumps(verify_lake(clean_lake, [BTC], D1, D3).to_json()))
    assert set(document) == TOP_KEYS
    assert (document["version"], document["from"], document["to"]) == (
        2,
        "2025-07-01",
        "2025-07-03",
    )
    assert document["ok"] is False and document["errors"] == 1
    assert all(set(s) == SYMBOL_KEYS for s in document["symbols"])
    assert all(set(f) - {"days"} == FINDING_KEYS for f in document["findings"])
    [volume] = [f for f in document["findings"] if f["kind"] == "negative_volume"]
    assert volume == {
        "severity": "error",
        "kind": "negative_volume",
        "symbol": "BTC-USD",
        "path": "data/source=ibkr/market=crypto/timeframe=M1/symbol=BTC-USD/year=2025/month=07/"
        "part-2025-07.parquet",
        "day": "2025-07-01",
        "detail": "negative volume on 1 minute(s)",
        "minutes": [["2025-07-01T00:00:00+00:00", "2025-07-01T00:00:00+00:00"]],
        "ranges_total": 1,
        "minutes_total": 1,
        "truncated": False,
    }
    [gap] = [f for f in document["findings"] if f["kind"] == "gap"]
    assert (gap["day"], gap["ranges_total"], gap["minutes_total"], gap["truncated"]) == (
        None, 2, 6, False,
    )  # fmt: skip
    assert gap["days"] == [{"day": "2025-07-02", "gap_minutes": 6, "gaps": 2}]
    [btc] = document["symbols"]
    assert (btc["gaps"], btc["gap_minutes"], btc["gap_days"]) == (2, 6, 1)


# ------------------------------------------------------------------ pure pieces


def test_check_part_is_pure_and_names_the_path_it_is_given() -> None:
    table = day_bars(BTC, D1, skip=[0]).replace_schema_metadata(
        {COVERAGE_KEY: encode_coverage([DayCoverage(D1, 1439, FETCHED, True)])}
    )
    result = check_part(table, BTC, JULY, Path("anywhere.parquet"))
    [gap] = result.findings
    assert (gap.kind, gap.path, gap.minutes) == (
        Kind.GAP,
        Path("anywhere.parquet"),
        ((at(D1, 0), at(D1, 0)),),
    )
    assert result.rows_per_day == {D1: 1439}


def test_minute_runs_split_at_midnight() -> None:
    base = int(day_start(D1).timestamp()) // 60
    runs = minute_runs_by_day([base - 2, base - 1, base, base + 1, base + 5])
    assert runs == {
        date(2025, 6, 30): [(base - 2, base - 1)],
        D1: [(base, base + 1), (base + 5, base + 5)],
    }


def test_missing_minute_ranges_between_bars() -> None:
    """The one gap finder (the worker's and verify's): bars at minutes 5-7 and 10-12 of 0-20."""
    m = 60_000_000
    bars = [k * m for k in (5, 6, 7, 10, 11, 12)]
    assert missing_minute_ranges(bars, 0, 21 * m) == [(0, 4 * m), (8 * m, 9 * m), (13 * m, 20 * m)]
    assert missing_minute_ranges(bars[:3], 5 * m, 8 * m) == []
    assert missing_minute_ranges([], 3 * m, 5 * m) == [(3 * m, 4 * m)]


def test_unfetched_runs() -> None:
    assert unfetched_runs([D2], D1, date(2025, 7, 5)) == [(D1, D1), (D3, date(2025, 7, 5))]


# ------------------------------------------------------------------ files readers would read


def duckdb_rows(lake: Path) -> tuple[int, int]:
    """(rows, distinct ts) of BTC-USD as DuckDB reads the whole lake, as docs/lake.md shows."""
    duckdb = pytest.importorskip("duckdb")
    glob = (lake / "data" / "**" / "*.parquet").as_posix()
    [row] = duckdb.sql(
        f"select count(*), count(distinct ts) from read_parquet('{glob}', hive_partitioning=true)"
        " where symbol = 'BTC-USD'"
    ).fetchall()
    return row


@pytest.mark.parametrize(
    "where",
    [
        "year=2025/month=07/part-2025-07 (copy).parquet",
        "year=2025/month=7/part-2025-07.parquet",
        "year=2025/month=07/old/part-2025-07.parquet",
    ],
)
def test_a_copy_of_a_part_that_readers_would_read_is_an_error(clean_lake: Path, where: str) -> None:
    part = btc_part(clean_lake)
    assert duckdb_rows(clean_lake) == (3 * 1440 - 6, 3 * 1440 - 6)
    copy = part.parents[2] / where
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(part.read_bytes())
    # What verify must catch: DuckDB now returns every BTC-USD row twice.
    assert duckdb_rows(clean_lake) == (2 * (3 * 1440 - 6), 3 * 1440 - 6)
    report = verify_lake(clean_lake)
    [stray] = errors(report)
    assert (stray.kind, stray.symbol, stray.path) == (Kind.STRAY_FILE, BTC, copy)
    assert report.symbols[0].errors == 1 and not report.ok


def test_files_outside_symbol_folders_are_errors_too(clean_lake: Path) -> None:
    part = btc_part(clean_lake)
    outside = [
        clean_lake / "data" / "loose.parquet",
        clean_lake / "data/source=ibkr/market=crypto/timeframe=M1/symbol=btc-usd/x.parquet",
    ]
    for path in outside:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(part.read_bytes())
    found = {(f.kind, f.symbol, f.path) for f in errors(verify_lake(clean_lake, [ETH]))}
    assert found == {(Kind.STRAY_FILE, None, path) for path in outside}


@pytest.mark.parametrize(
    "name",
    ["_copy.parquet", ".copy.parquet", "_old/part-2025-07.parquet", ".trash/part-2025-07.parquet"],
)
def test_hidden_names_ending_in_parquet_are_read_by_duckdb_so_are_errors(
    clean_lake: Path, name: str
) -> None:
    part = btc_part(clean_lake)
    copy = part.parent / name
    copy.parent.mkdir(exist_ok=True)
    copy.write_bytes(part.read_bytes())
    # pyarrow.dataset skips '.' and '_' names; DuckDB's (and Polars') glob does not.
    assert duckdb_rows(clean_lake) == (2 * (3 * 1440 - 6), 3 * 1440 - 6)
    [stray] = errors(verify_lake(clean_lake))
    assert (stray.kind, stray.path) == (Kind.STRAY_FILE, copy)
    assert "DuckDB" in stray.detail


def test_files_no_reader_reads_are_left_alone(clean_lake: Path) -> None:
    part = btc_part(clean_lake)
    for name in ("_notes.txt", ".part-2025-07.parquet.bak", "_old/part-2025-07.parquet.bak"):
        copy = part.parent / name
        copy.parent.mkdir(exist_ok=True)
        copy.write_bytes(part.read_bytes())
    assert duckdb_rows(clean_lake) == (3 * 1440 - 6, 3 * 1440 - 6)
    dataset = ds.dataset(clean_lake / "data", partitioning="hive")
    assert dataset.count_rows() == 3 * 1440 - 6 + 2 * 1440
    assert verify_lake(clean_lake).ok


def test_any_file_pyarrow_dataset_would_read_is_an_error(clean_lake: Path) -> None:
    part = btc_part(clean_lake)
    backup = part.with_name("part-2025-07.parquet.bak")
    backup.write_bytes(part.read_bytes())
    # pyarrow.dataset reads every file not named '.' or '_', whatever its extension.
    total = ds.dataset(clean_lake / "data", partitioning="hive").count_rows()
    assert total == 2 * (3 * 1440 - 6) + 2 * 1440
    [stray] = errors(verify_lake(clean_lake))
    assert (stray.kind, stray.path) == (Kind.STRAY_FILE, backup)
    assert "pyarrow.dataset" in stray.detail


def test_an_empty_lake_is_a_warning_that_nothing_was_found(tmp_path: Path) -> None:
    report = verify_lake(tmp_path)
    [warning] = report.findings
    assert (warning.severity, warning.kind) == (Severity.WARNING, Kind.NO_PARTS)
    assert report.ok and report.parts == 0
    (tmp_path / "data").mkdir()  # a lake folder with nothing in it yet
    assert [f.kind for f in verify_lake(tmp_path).findings] == [Kind.NO_PARTS]


def test_a_lake_with_parts_has_no_such_warning(clean_lake: Path) -> None:
    assert Kind.NO_PARTS not in {f.kind for f in verify_lake(clean_lake).findings}


# ------------------------------------------------------------------ long lists are cut


def test_a_finding_names_its_first_ranges_and_says_how_many_there_are(clean_lake: Path) -> None:
    # Every other minute of 07:00-07:39 missing on D1: 20 one-minute gaps; 05:00-05:09 too.
    def spoil(t: pa.Table) -> pa.Table:
        drop = {at(D1, 7, m) for m in range(0, 40, 2)} | {at(D1, 5, m) for m in range(10)}
        keep = [ts not in drop for ts in t["ts"].to_pylist()]
        return t.filter(pa.array(keep))

    rewrite(btc_part(clean_lake), spoil)
    edit_coverage(btc_part(clean_lake), lambda c: c.update({D1: replace(c[D1], rows=1410)}))
    report = verify_lake(clean_lake, [BTC])
    assert report.ok
    [gap] = [f for f in report.findings if f.kind is Kind.GAP]
    assert gap.minutes == (
        (at(D1, 5, 0), at(D1, 5, 9)),
        *((at(D1, 7, m), at(D1, 7, m)) for m in range(0, 8, 2)),
    )
    assert (gap.ranges_total, gap.minutes_total, gap.truncated) == (21 + 2, 30 + 6, True)
    assert gap.days == (DayGaps(D1, 30, 21), DayGaps(D2, 6, 2))
    every = [f for f in verify_lake(clean_lake, [BTC], gaps=True).findings if f.kind is Kind.GAP]
    assert [(f.day, len(f.minutes), f.ranges_total, f.truncated) for f in every] == [
        (D1, 21, 21, False),
        (D2, 2, 2, False),
    ]
    document = verify_lake(clean_lake, [BTC]).to_json()
    [cut] = [f for f in document["findings"] if f["kind"] == "gap"]
    assert (len(cut["minutes"]), cut["ranges_total"], cut["minutes_total"], cut["truncated"]) == (
        5, 23, 36, True,
    )  # fmt: skip


def test_an_error_on_many_minutes_is_cut_the_same_way(clean_lake: Path) -> None:
    bad_rows = {at(D3, 1, m): -1.0 for m in range(0, 60, 2)}  # 30 one-minute runs
    rewrite(
        btc_part(clean_lake),
        lambda t: set_rows(t, "volume", {row_of(t, k): v for k, v in bad_rows.items()}),
    )
    [cut] = errors(verify_lake(clean_lake, [BTC]))
    assert (cut.kind, len(cut.minutes), cut.ranges_total, cut.minutes_total) == (
        Kind.NEGATIVE_VOLUME, 5, 30, 30,
    )  # fmt: skip
    [whole] = errors(verify_lake(clean_lake, [BTC], gaps=True))
    assert (len(whole.minutes), whole.truncated) == (30, False)


def test_aggregate_parts_are_parts_and_their_copies_strays(clean_lake: Path) -> None:
    from backfill.aggregate.build import AggregateRequest, aggregate_lake
    from backfill.aggregate.timeframes import BY_NAME
    from backfill.lake.paths import aggregate_part_path

    aggregate_lake(AggregateRequest(clean_lake, (BY_NAME["H1"],)), now=FETCHED)
    hourly = aggregate_part_path(clean_lake, BTC, "H1", JULY)
    assert hourly.is_file() and verify_lake(clean_lake).ok
    copy = hourly.with_name("part-2025-07 (copy).parquet")
    copy.write_bytes(hourly.read_bytes())
    [stray] = errors(verify_lake(clean_lake))
    assert (stray.kind, stray.symbol, stray.path) == (Kind.STRAY_FILE, BTC, copy)
