"""Properties on random bars over several days, thin and dense: no lookahead, agreement
with the M5 and D1 aggregates, event order and the break's straddle."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from backfill.aggregate import buckets
from backfill.aggregate.timeframes import BY_NAME
from backfill.domain import UTC, days_between
from backfill.levels.compute import Bars, compute_levels, session_windows, us
from backfill.levels.events import EventParams, compute_events
from backfill.levels.profiles import PROFILES, Scan
from backfill.levels.tolerance import Tolerance
from tests.levels.helpers import BTC, bars_table

FIRST, LAST = date(2025, 3, 7), date(2025, 3, 11)  # across New York's spring forward
SESSIONS = days_between(FIRST + timedelta(days=1), LAST - timedelta(days=1))
WHOLE = set(days_between(FIRST, LAST))
START_US = int(datetime(FIRST.year, FIRST.month, FIRST.day, tzinfo=UTC).timestamp()) * 10**6
MINUTES = ((LAST - FIRST).days + 1) * 1440
PARAMS = [
    EventParams(Tolerance("bps", 5.0)),
    EventParams(Tolerance("abs", 0.5), 4, "minutes"),
    EventParams(Tolerance("consumer"), 2, "bars", "same"),
    # A scan from midnight: bars before the PM and OR windows end are in it, and must
    # not be tested against levels not known yet.
    EventParams(Tolerance("bps", 20.0), 15, "bars", "next", Scan(time(0), time(11, 30))),
]


def random_bars(seed: int, density: float) -> Bars:
    """A random walk on a 0.25 grid (ties with levels happen) at ``density`` of the minutes;
    the hours the profiles open in are dense whatever ``density`` is, so breaks happen."""
    rng = np.random.default_rng(seed)
    minute = np.arange(MINUTES)
    hour = (minute // 60) % 24
    keep = rng.random(MINUTES) < np.where(np.isin(hour, [0, 1, 13, 14, 15]), 0.9, density)
    n = int(keep.sum())
    close = 100 + np.cumsum(rng.choice([-0.5, -0.25, 0, 0.25, 0.5], n))
    open_ = np.concatenate(([100.0], close[:-1])) + rng.choice([-0.25, 0, 0.25], n)
    high = np.maximum(open_, close) + rng.choice([0, 0.25, 0.5], n)
    low = np.minimum(open_, close) - rng.choice([0, 0.25, 0.5], n)
    ts = START_US + (minute[keep] + 1) * 60_000_000  # bar ends
    return Bars(ts.astype(np.int64), open_, high, low, close)


def all_of(bars: Bars, profile_name: str, params: EventParams) -> tuple[pa.Table, pa.Table]:
    profile = PROFILES[profile_name]
    levels = compute_levels(bars, "BTC-USD", profile, SESSIONS, WHOLE)
    return levels, compute_events(bars, levels, profile, params, WHOLE)


def _us(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() * 1_000_000)


densities = st.sampled_from([0.01, 0.05, 0.3, 1.0])
seeds = st.integers(0, 2**32 - 1)


def cuts(seed: int, cut: int, profile: str, params: EventParams) -> list[int]:
    """The drawn cut, and one inside each window (PM, OR, scan) of each session: a cut
    anywhere would rarely land where a lookahead shows."""
    rng = np.random.default_rng(seed)
    out = [START_US + cut * 60_000_000]
    for day in SESSIONS:
        w = session_windows(PROFILES[profile], day, params.scan)
        for window in (w.pm, w.opening, w.scan):
            if window is not None:
                out.append(us(window.start) + int(rng.integers(0, window.minutes)) * 60_000_000)
    return out


@settings(max_examples=15, deadline=None)
@given(
    seed=seeds,
    density=densities,
    cut=st.integers(0, MINUTES),
    profile=st.sampled_from(sorted(PROFILES)),
    params=st.sampled_from(PARAMS),
)
def test_no_lookahead(
    seed: int, density: float, cut: int, profile: str, params: EventParams
) -> None:
    bars = random_bars(seed, density)
    full_levels, full_events = all_of(bars, profile, params)
    for t in cuts(seed, cut, profile, params):
        cut_levels, cut_events = all_of(bars.until(t), profile, params)
        same_known_fields(full_levels, full_events, cut_levels, cut_events, t)


def same_known_fields(
    full_levels: pa.Table, full_events: pa.Table, cut_levels: pa.Table, cut_events: pa.Table, t: int
) -> None:
    or_known = {
        r["session_date"]: _us(r["available_from_utc"]) <= t
        for r in full_levels.to_pylist()
        if r["level"] == "ORH"
    }
    fields = (
        "value",
        "value_ts",
        "minutes",
        "window_start_utc",
        "window_end_utc",
        "available_from_utc",
        "valid_to_utc",
        "expected_minutes",
    )
    for full, part in zip(full_levels.to_pylist(), cut_levels.to_pylist(), strict=True):
        assert (full["session_date"], full["level"]) == (part["session_date"], part["level"])
        if _us(full["available_from_utc"]) <= t:
            assert {f: full[f] for f in fields} == {f: part[f] for f in fields}
            if or_known[full["session_date"]]:
                assert full["inside_or"] == part["inside_or"]
    cut_by_key = {(e["session_date"], e["level"], e["attempt"]): e for e in cut_events.to_pylist()}
    seen = set()
    for e in full_events.to_pylist():
        if _us(e["break_ts"]) > t:
            continue
        key = (e["session_date"], e["level"], e["attempt"])
        seen.add(key)
        c = cut_by_key[key]
        known = [
            f for f in e if f.startswith(("prev_", "break_", "level", "direction", "tolerance"))
        ]
        if or_known[e["session_date"]]:  # inside_or is known at the OR's end, not the break's
            known.append("inside_or")
        if e["retest_ts"] is not None and _us(e["retest_ts"]) <= t:
            known += ["retest_ts", "retest_low", "retest_high", "retest_close", "bars_to_retest"]
        if e["signal_ts"] is not None and _us(e["signal_ts"]) <= t:
            known += ["signal_ts", "signal_close"]
        if e["outcome"] != "open_at_scan_end" and _us(e["end_ts"]) <= t:
            known += ["outcome", "end_ts", "bars_to_end", "minutes_to_end"]
        assert {f: e[f] for f in known} == {f: c[f] for f in known}
    assert seen == set(cut_by_key)


@settings(max_examples=12, deadline=None)
@given(seed=seeds, density=densities)
def test_daily_open_utc_and_us_open_agree_with_the_m5_and_d1_aggregates(
    seed: int, density: float
) -> None:
    bars = random_bars(seed, density)
    table = bars_table(
        BTC,
        {
            datetime.fromtimestamp(t / 1e6, UTC): (o, h, lo, c)
            for t, o, h, lo, c in zip(
                bars.ts.tolist(), bars.open, bars.high, bars.low, bars.close, strict=True
            )
        },
    )
    far = datetime(2100, 1, 1, tzinfo=UTC)
    d1, m5 = (
        {
            row["ts"]: row
            for row in buckets.aggregate(
                table, BY_NAME[tf], WHOLE, far, include_partial=True
            ).to_pylist()
        }
        for tf in ("D1", "M5")
    )
    for profile in ("daily_open_utc", "us_equity_open"):
        levels = compute_levels(bars, "BTC-USD", PROFILES[profile], SESSIONS, WHOLE).to_pylist()
        for row in levels:
            end = row["window_end_utc"]
            if row["level"] in ("ORH", "ORL"):
                bar = m5.get(end)
                want = None if bar is None else bar["high" if row["level"] == "ORH" else "low"]
                assert row["value"] == want
            if profile == "daily_open_utc" and row["level"] in ("PDH", "PDL", "PDC"):
                bar = d1.get(end)
                name = {"PDH": "high", "PDL": "low", "PDC": "close"}[row["level"]]
                assert row["value"] == (None if bar is None else bar[name])


@settings(max_examples=15, deadline=None)
@given(
    seed=seeds,
    density=densities,
    profile=st.sampled_from(sorted(PROFILES)),
    params=st.sampled_from(PARAMS),
)
def test_event_order_and_the_break_straddles_the_level(
    seed: int, density: float, profile: str, params: EventParams
) -> None:
    bars = random_bars(seed, density)
    levels, events = all_of(bars, profile, params)
    available = {
        (r["session_date"], r["level"]): r["available_from_utc"] for r in levels.to_pylist()
    }
    for e in events.to_pylist():
        assert e["prev_ts"] < e["break_ts"] <= e["end_ts"]
        if e["retest_ts"] is not None:
            assert e["break_ts"] < e["retest_ts"] <= e["end_ts"]
        if e["signal_ts"] is not None:
            assert e["retest_ts"] <= e["signal_ts"] <= e["end_ts"]
            assert e["outcome"] == "signal"
        assert e["break_ts"] > available[(e["session_date"], e["level"])]
        low, high = sorted((e["prev_mid"], e["break_mid"]))
        assert low < e["level_value"] < high
        assert (e["prev_mid"] < e["break_mid"]) == (e["direction"] == "up")
