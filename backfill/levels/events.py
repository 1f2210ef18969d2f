"""Break & Retest attempts, one level at a time (levels.md section 3): pure, numpy.

Every bar that would break a level from idle is found at once (``prev.mid < L < cur.mid``
on the bars after the level is available and inside the scan); each is then resolved as
if it started an attempt (the next ``max_retest_bars + 1`` bars decide it), and finally
the attempts are chained per level: a break counts only after the previous attempt ended.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from backfill.levels.compute import Bars, session_windows, us, window_complete
from backfill.levels.profiles import Profile, Scan
from backfill.levels.tables import EVENTS_SCHEMA, LEVEL_ORDER, OUTCOMES, empty
from backfill.levels.tolerance import Tolerance

_MIN_US = 60_000_000
_SIGNAL, _PRICE, _TIME, _OPEN = OUTCOMES


@dataclass(frozen=True)
class EventParams:
    tolerance: Tolerance
    max_retest_bars: int = 15
    retest_unit: str = "bars"  # or "minutes"
    signal_bar: str = "next"  # or "same"
    scan: Scan | None = None  # None: the profile's


def compute_events(
    bars: Bars,
    levels: pa.Table,
    profile: Profile,
    params: EventParams,
    complete_days: Collection[date],
) -> pa.Table:
    """Every attempt on every level row with a value and a direction, sorted by
    session_date, break_ts, level order, attempt."""
    keep = pc.and_(pc.is_valid(levels["value"]), pc.is_valid(levels["direction"]))
    rows = levels.filter(keep)
    if not rows.num_rows or not len(bars.ts):
        return empty(EVENTS_SCHEMA)
    days = rows["session_date"].to_pylist()
    names = rows["level"].to_pylist()
    value = rows["value"].to_numpy()
    up = np.array([d == "up" for d in rows["direction"].to_pylist()])
    avail = rows["available_from_utc"].cast(pa.int64()).to_numpy()
    scans = [session_windows(profile, d, params.scan).scan for d in days]
    scan_start = np.array([us(s.start) for s in scans], dtype=np.int64)
    scan_end = np.array([us(s.end) for s in scans], dtype=np.int64)
    tol = np.array([params.tolerance.price(n, v) for n, v in zip(names, value, strict=True)])

    ts, mid = bars.ts, bars.mid
    # Tested bars of each level row: inside the scan and after the level is known.
    lo = np.searchsorted(ts, np.maximum(scan_start, avail), side="right")
    hi = np.searchsorted(ts, scan_end, side="right")  # exclusive; hi - 1 is the scan's last bar
    lo = np.maximum(lo, 1)  # a bar with no previous row cannot break
    counts = np.maximum(hi - lo, 0)
    offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
    owner = np.repeat(np.arange(len(counts)), counts)
    j = np.arange(counts.sum()) - np.repeat(offsets - lo, counts)
    level = value[owner]
    crosses = np.where(
        up[owner],
        (mid[j - 1] < level) & (level < mid[j]),
        (mid[j - 1] > level) & (level > mid[j]),
    )
    cand_row, cand_bar = owner[crosses], j[crosses]
    if not len(cand_bar):
        return empty(EVENTS_SCHEMA)
    last = hi[cand_row] - 1
    code, at = _resolve(bars, cand_bar, last, value[cand_row], up[cand_row], tol[cand_row], params)
    # Chain: a break counts only on a bar after the previous attempt of its level ended.
    chosen: list[int] = []
    attempts: list[int] = []
    row_now, end_now, attempt = -1, -1, 0
    for i, (r, b) in enumerate(zip(cand_row.tolist(), cand_bar.tolist(), strict=True)):
        if r != row_now:
            row_now, end_now, attempt = r, -1, 0
        if b <= end_now:
            continue
        attempt += 1
        chosen.append(i)
        attempts.append(attempt)
        end_now = int(_end_of(code[i], at[i], last[i], b, params.signal_bar))
    pick = np.array(chosen, dtype=np.int64)
    return _table(
        bars,
        rows,
        profile,
        params,
        complete_days,
        scans,
        tol,
        cand_row[pick],
        cand_bar[pick],
        code[pick],
        at[pick],
        last[pick],
        np.array(attempts, dtype=np.int16),
    )


# codes of _resolve: what ended (or moved) the attempt, at bar ``at``
_C_OPEN, _C_TIME, _C_PRICE, _C_RETEST = 0, 1, 2, 3


def _resolve(
    bars: Bars,
    b: np.ndarray,
    last: np.ndarray,
    level: np.ndarray,
    up: np.ndarray,
    tol: np.ndarray,
    params: EventParams,
) -> tuple[np.ndarray, np.ndarray]:
    """For each break at bar ``b``: the first bar after it that ends the attempt (time,
    price) or retests, tested in the contract's order; OPEN when none does by ``last``."""
    k_max = params.max_retest_bars + 1  # bar max+1 (or earlier, in minutes) ends it on time
    steps = np.arange(1, k_max + 1)
    j = b[:, None] + steps[None, :]
    inside = j <= last[:, None]
    jc = np.minimum(j, len(bars.ts) - 1)
    close, low, high = bars.close[jc], bars.low[jc], bars.high[jc]
    lv, tl, u = level[:, None], tol[:, None], up[:, None]
    if params.retest_unit == "minutes":
        late = (bars.ts[jc] - bars.ts[b][:, None]) > params.max_retest_bars * _MIN_US
    else:
        late = np.broadcast_to(steps[None, :] > params.max_retest_bars, j.shape)
    wrong_side = np.where(u, close < lv, close > lv)
    retest = np.where(u, (low <= lv + tl) & (close > lv), (high >= lv - tl) & (close < lv))
    hit = inside & (late | wrong_side | retest)
    any_hit = hit.any(axis=1)
    first = hit.argmax(axis=1)
    rows = np.arange(len(b))
    code = np.where(
        late[rows, first], _C_TIME, np.where(wrong_side[rows, first], _C_PRICE, _C_RETEST)
    )
    code = np.where(any_hit, code, _C_OPEN)
    at = np.where(any_hit, j[rows, first], last)
    return code.astype(np.int8), at.astype(np.int64)


def _end_of(code: int, at: int, last: int, b: int, signal_bar: str) -> int:
    if code == _C_RETEST:
        if signal_bar == "same":
            return at
        return at + 1 if at + 1 <= last else at
    return max(at, b)


def _table(
    bars: Bars,
    rows: pa.Table,
    profile: Profile,
    params: EventParams,
    complete_days: Collection[date],
    scans: list,
    tol: np.ndarray,
    row: np.ndarray,
    b: np.ndarray,
    code: np.ndarray,
    at: np.ndarray,
    last: np.ndarray,
    attempt: np.ndarray,
) -> pa.Table:
    ts, mid = bars.ts, bars.mid
    n = len(b)
    retested = code == _C_RETEST
    if params.signal_bar == "same":
        signalled = retested
        signal_at = at
    else:
        signalled = retested & (at + 1 <= last)
        signal_at = at + 1
    end = np.where(retested, np.where(signalled, signal_at, at), np.maximum(at, b))
    outcome = np.where(
        signalled,
        _SIGNAL,
        np.where(code == _C_PRICE, _PRICE, np.where(code == _C_TIME, _TIME, _OPEN)),
    )
    safe_signal = np.minimum(signal_at, len(ts) - 1)
    scan_complete = np.array(
        [window_complete(scans[r], complete_days) for r in row.tolist()], dtype=bool
    )
    level_complete = rows["complete"].to_numpy(zero_copy_only=False)[row]
    ts_type = EVENTS_SCHEMA.field("break_ts").type

    def stamp(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
        return pa.array(values.astype(np.int64), pa.int64(), mask=mask).cast(ts_type)

    def price(values: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
        return pa.array(values, pa.float64(), mask=mask)

    take = pa.array(row)
    not_retested, not_signalled = ~retested, ~signalled
    columns = {
        name: rows[name].take(take)
        for name in (
            "source",
            "market",
            "symbol",
            "profile",
            "tz",
            "session_date",
            "level",
            "direction",
        )
    }
    columns |= {
        "level_value": rows["value"].take(take),
        "inside_or": rows["inside_or"].take(take),
        "tolerance_spec": pa.array([params.tolerance.spec] * n, pa.string()),
        "tolerance_abs": price(tol[row]),
        "max_retest_bars": pa.array(np.full(n, params.max_retest_bars), pa.int16()),
        "retest_unit": pa.array([params.retest_unit] * n, pa.string()),
        "signal_bar": pa.array([params.signal_bar] * n, pa.string()),
        "attempt": pa.array(attempt, pa.int16()),
        "prev_ts": stamp(ts[b - 1]),
        "prev_mid": price(mid[b - 1]),
        "break_ts": stamp(ts[b]),
        "break_open": price(bars.open[b]),
        "break_high": price(bars.high[b]),
        "break_low": price(bars.low[b]),
        "break_close": price(bars.close[b]),
        "break_mid": price(mid[b]),
        "retest_ts": stamp(ts[at], not_retested),
        "retest_low": price(bars.low[at], not_retested),
        "retest_high": price(bars.high[at], not_retested),
        "retest_close": price(bars.close[at], not_retested),
        "signal_ts": stamp(ts[safe_signal], not_signalled),
        "signal_close": price(bars.close[safe_signal], not_signalled),
        "outcome": pa.array(outcome.tolist(), pa.string()),
        "end_ts": stamp(ts[end]),
        "bars_to_retest": pa.array(at - b, pa.int16(), mask=not_retested),
        "bars_to_end": pa.array(end - b, pa.int16()),
        "minutes_to_end": pa.array((ts[end] - ts[b]) // _MIN_US, pa.int32()),
        "complete": pa.array(level_complete & scan_complete, pa.bool_()),
    }
    table = pa.table(columns, schema=EVENTS_SCHEMA)
    order = pa.array([LEVEL_ORDER[x] for x in table["level"].to_pylist()], pa.int8())
    return (
        table.append_column("_order", order)
        .sort_by(
            [
                ("session_date", "ascending"),
                ("break_ts", "ascending"),
                ("_order", "ascending"),
                ("attempt", "ascending"),
            ]
        )
        .drop_columns(["_order"])
    )
