"""A day's first or last bar missing on a pattern of days: bars a window edge took.

A request for days D1..Dn whose window leaves out its first bar start loses the bar ending
D1 00:00 (minute 0 of D1); one that leaves out its last loses the bar ending Dn 23:59
(minute 1,439 of Dn). The day is still recorded complete, so nothing asks for it again.
Over a lake fetched in windows of n days that is minute 0 (or 1,439) missing on every n-th
day: ``minute_check`` (nearly every day) does not see it.

A minute without trades has no bar, so a missing edge minute alone proves nothing, above
all on a thin market. Each day gives its own null: the share of the 120 minutes next to
the edge (same day) without a bar, smoothed so a full neighbourhood does not make one
missing bar a miracle. For each period n in 1..10 and phase r, the days with
``day % n == r`` are a class; a class whose edge minute is missing far more often than
its days' neighbourhoods predict is a loss. The p-value is the binomial tail at the class's
mean null (Hoeffding 1956: for a count at least the mean + 1, no sum of independent
Bernoullis with that mean has a fatter tail), times the number of classes tried; a loss
also needs at least ``min_lost`` days and to explain a material share of the days where a
bar was expected. On a thin market (90% of minutes empty) even a class missing every
time is no evidence, and is not reported. Pure: values in, findings out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc

from backfill.domain import MINUTES_PER_DAY

_US_PER_MINUTE = 60_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
NEIGHBOURS = 120  # minutes next to the edge, same day, that say how thin the day is there
PERIODS = tuple(range(1, 11))  # request windows of 1..10 days (--window-days)
FIRST, LAST = 0, MINUTES_PER_DAY - 1  # minute of the day, by bar END


@dataclass(frozen=True)
class EdgeThresholds:
    """When an edge minute's absences are a loss (``backfill verify``)."""

    alpha: float = 1e-6  # family-wise chance of calling a quiet market a loss
    min_lost: int = 3  # days of the class missing the minute, at least
    min_lost_share: float = 0.1  # of the class's days where a bar was expected


@dataclass(frozen=True)
class EdgeDay:
    """One whole day: whether its first and last minutes have a bar, and how many of the
    ``NEIGHBOURS`` minutes next to each edge have none."""

    day: int  # days since the epoch
    first_missing: bool
    first_around: int
    last_missing: bool
    last_around: int


def edge_days(ts_us: pa.Array, whole_days: Iterable[int]) -> list[EdgeDay]:
    """The ``EdgeDay`` of each day in ``whole_days`` (days since the epoch) from bar ends
    ``ts_us`` (int64 µs); a day without a single bar is left out (nothing to judge by)."""
    wanted = sorted(set(whole_days))
    if not len(ts_us) or not wanted:
        return []
    minutes = pc.divide(ts_us, _US_PER_MINUTE)
    days = pc.divide(minutes, MINUTES_PER_DAY)
    of_day = pc.subtract(minutes, pc.multiply(days, MINUTES_PER_DAY))
    near = pc.or_(pc.less_equal(of_day, NEIGHBOURS), pc.greater_equal(of_day, LAST - NEIGHBOURS))
    keep = pc.and_(near, pc.is_in(days, pa.array(wanted, pa.int64())))
    # Per day: [first minute present, bars next to it, last minute present, bars next to it],
    # counted by Arrow (a bucket per (day, part of the edge)), not bar by bar.
    near_day, near_minute = pc.filter(days, keep), pc.filter(of_day, keep)
    bucket = pc.if_else(
        pc.equal(near_minute, FIRST),
        0,
        pc.if_else(
            pc.less_equal(near_minute, NEIGHBOURS), 1, pc.if_else(pc.equal(near_minute, LAST), 2, 3)
        ),
    )
    counted = pc.value_counts(pc.add(pc.multiply(near_day, 4), pc.cast(bucket, pa.int64())))
    seen: dict[int, list[int]] = {}
    for key, n in zip(
        counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True
    ):
        seen.setdefault(key // 4, [0, 0, 0, 0])[key % 4] = n
    return [
        EdgeDay(day, not t[0], NEIGHBOURS - t[1], not t[2], NEIGHBOURS - t[3])
        for day in wanted
        if (t := seen.get(day))
    ]


@dataclass(frozen=True)
class EdgeLoss:
    """An edge minute lost on a pattern of days: the class that shows it best."""

    minute: int  # FIRST or LAST
    period: int  # the class: days with day % period == phase
    phase: int
    class_days: int
    class_missing: int
    expected: float  # absences the class's neighbourhoods predict
    p_value: float  # family-wise (times the classes tried)
    days: int  # whole days judged
    missing: tuple[date, ...]  # every judged day missing the minute

    @property
    def label(self) -> str:
        return f"{self.minute // 60:02d}:{self.minute % 60:02d}"

    @property
    def first_day(self) -> date:
        return self.missing[0]

    @property
    def last_day(self) -> date:
        return self.missing[-1]

    def detail(self, command: str) -> str:
        which = "first" if self.minute == FIRST else "last"
        pattern = (
            ""
            if self.period == 1
            else (
                f", on every {_ordinal(self.period)} day {self.class_missing} of {self.class_days}"
            )
        )
        return (
            f"the bar ending {self.label} UTC (a day's {which} bar) is missing on "
            f"{len(self.missing)} of {self.days} whole days{pattern}, where the minutes "
            f"around it predict {self.expected:.1f} (p < {self.p_value:.0e}): a request "
            f"window's {which} bar not served (a window-edge rule that did not fit the "
            "gateway), yet the days are recorded complete, so a plain rerun asks nothing "
            "(if the bars are still missing after the repair, the source has none there). "
            f"Repair: {command}"
        )


def edge_losses(days: Sequence[EdgeDay], thresholds: EdgeThresholds) -> list[EdgeLoss]:
    """The edge minutes (first, last) lost on a pattern of ``days``; see the module doc."""
    losses = []
    for minute in (FIRST, LAST):
        loss = _judge(days, minute, thresholds)
        if loss is not None:
            losses.append(loss)
    return losses


def _judge(days: Sequence[EdgeDay], minute: int, thresholds: EdgeThresholds) -> EdgeLoss | None:
    marks = [
        (
            d.day,
            d.first_missing if minute == FIRST else d.last_missing,
            null_share(d.first_around if minute == FIRST else d.last_around),
        )
        for d in days
    ]
    tried = sum(PERIODS)
    # Per class (period, phase): days, days missing the minute, absences expected.
    classes: dict[tuple[int, int], list[float]] = {}
    for day, missing, p in marks:
        for period in PERIODS:
            tally = classes.setdefault((period, day % period), [0, 0, 0.0])
            tally[0] += 1
            tally[1] += missing
            tally[2] += p
    best: tuple[float, int, int, int, int, float] | None = None
    for (period, phase), (k, x, expected) in sorted(classes.items()):
        k, x = int(k), int(x)
        if x < thresholds.min_lost or x < expected + 1:
            continue
        if (x - expected) < thresholds.min_lost_share * (k - expected):
            continue
        p_value = binomial_tail(x, k, expected / k)
        if best is None or p_value < best[0]:
            best = (p_value, period, phase, k, x, expected)
    if best is None or best[0] * tried >= thresholds.alpha:
        return None
    p_value, period, phase, k, x, expected = best
    missing_days = tuple(date.fromordinal(_EPOCH_ORDINAL + day) for day, m, _ in marks if m)
    return EdgeLoss(
        minute,
        period,
        phase,
        k,
        x,
        expected,
        min(1.0, p_value * tried),
        len(marks),
        tuple(sorted(missing_days)),
    )


def null_share(around_missing: int) -> float:
    """The chance a day's edge minute has no bar by itself, from its neighbourhood: the
    edge counted as one more neighbour with a bar missing (a full neighbourhood gives
    1/121, not 0: one missing bar on a busy day is not impossible)."""
    return (around_missing + 1) / (NEIGHBOURS + 1)


def binomial_tail(x: int, n: int, p: float) -> float:
    """P(Binomial(n, p) >= x), summed in log space (no overflow for n in the thousands)."""
    if x <= 0:
        return 1.0
    if x > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1)
        - math.lgamma(j + 1)
        - math.lgamma(n - j + 1)
        + j * log_p
        + (n - j) * log_q
        for j in range(x, n + 1)
    ]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def _ordinal(n: int) -> str:
    return f"{n}{'nd' if n == 2 else 'rd' if n == 3 else 'th'}"
