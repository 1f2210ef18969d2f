"""Bars to write and child-process bodies for the lake tests (importable by spawned children)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime, timedelta
from multiprocessing.synchronize import Event
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from backfill.domain import (
    EXCHANGE,
    MARKET,
    MINUTE,
    SOURCE,
    UTC,
    WHAT_TO_SHOW,
    DayCoverage,
    Symbol,
    day_start,
    months_between,
)
from backfill.lake import store
from backfill.lake.paths import part_path
from backfill.lake.schema import BAR_SCHEMA

BTC = Symbol("BTC", "USD")
ETH = Symbol("ETH", "USD")
FETCHED = datetime(2025, 9, 1, 12, 0, tzinfo=UTC)

# A table whose schema drifted from the contract, two ways (store and verify refuse each).
SCHEMA_DRIFTS: dict[str, Callable[[pa.Table], pa.Table]] = {
    "missing-column": lambda t: t.drop_columns(["wap"]),
    "column-type": lambda t: t.set_column(
        5, "volume", pc.cast(t["volume"], pa.int64(), safe=False)
    ),
}


def _retyped(t: pa.Table, name: str, type_: pa.DataType) -> pa.Table:
    i = t.schema.get_field_index(name)
    return t.set_column(i, pa.field(name, type_, nullable=False), t[name].cast(type_))


# The same bars in a schema another tool might write: every reader casts each back.
SCHEMA_VARIANTS: dict[str, Callable[[pa.Table], pa.Table]] = {
    "column-order": lambda t: t.select(["ts", "high", "open", *t.column_names[3:]]),
    "nullable": lambda t: t.cast(
        pa.schema([f.with_nullable(True) for f in t.schema], metadata=t.schema.metadata)
    ),
    "ts-ms": lambda t: _retyped(t, "ts", pa.timestamp("ms", tz="UTC")),
    "ts-ns": lambda t: _retyped(t, "ts", pa.timestamp("ns", tz="UTC")),
    "dictionary-text": lambda t: _retyped(t, "exchange", pa.dictionary(pa.int32(), pa.string())),
    "large-text": lambda t: _retyped(t, "symbol", pa.large_string()),
}


def bars_at(symbol: Symbol, ends: Iterable[datetime], price: float = 100.0) -> pa.Table:
    """One well-formed bar per bar-end timestamp, all at ``price``."""
    ts = list(ends)
    n = len(ts)
    return pa.table(
        {
            "ts": ts,
            "open": [price] * n,
            "high": [price + 1] * n,
            "low": [price - 1] * n,
            "close": [price + 0.5] * n,
            "volume": [1.5] * n,
            "source": [SOURCE] * n,
            "market": [MARKET] * n,
            "symbol": [str(symbol)] * n,
            "exchange": [EXCHANGE] * n,
            "what_to_show": [WHAT_TO_SHOW] * n,
            "wap": [price + 0.25] * n,
            "bar_count": [3] * n,
        },
        schema=BAR_SCHEMA,
    )


def day_bars(symbol: Symbol, day: date, price: float = 100.0, skip: Iterable[int] = ()) -> pa.Table:
    """A whole day of bars (1440 minutes), minus the minute indexes in ``skip``."""
    skipped = set(skip)
    start = day_start(day)
    ends = (start + timedelta(minutes=i) for i in range(1440) if i not in skipped)
    return bars_at(symbol, ends, price)


def days_bars(symbol: Symbol, days: Iterable[date], price: float = 100.0) -> pa.Table:
    return pa.concat_tables([day_bars(symbol, d, price) for d in days])


def write_days_child(lake: Path, days: list[date], minutes: list[int], start: Event) -> None:
    """Child body: write each of ``days`` as its own batch, after ``start`` fires."""
    start.wait()
    for day in days:
        base = day_start(day)
        ends = [base + timedelta(minutes=m) for m in minutes]
        store.write_batch(lake, BTC, bars_at(BTC, ends), [day], fetched_at=FETCHED)


def pause_before_replace_child(lake: Path, days: list[date], paused: Event) -> None:
    """Child body: write a batch but freeze between the complete temp file and os.replace."""

    def freeze(_tmp: Path) -> None:
        paused.set()
        threading.Event().wait()  # until the parent's SIGKILL

    store._before_replace = freeze
    store.write_batch(lake, BTC, days_bars(BTC, days, price=200.0), days, fetched_at=FETCHED)


def rewrite_forever_child(
    lake: Path, days: list[date], prices: list[float], written: Event
) -> None:
    """Child body: rewrite the same days again and again, alternating prices, until killed."""
    tables = [days_bars(BTC, days, price) for price in prices]
    turn = 0
    while True:
        store.write_batch(lake, BTC, tables[turn % len(tables)], days, fetched_at=FETCHED)
        written.set()
        turn += 1


_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2
_CAPABILITY_VERSION_3 = 0x20080522


@contextlib.contextmanager
def file_permissions_enforced() -> Iterator[None]:
    """Make file modes bind this thread even when it runs as root (as the tests do here).

    Root reads a ``chmod 000`` file through CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH: these are
    lowered from the calling thread's effective set (they stay permitted) and raised again on
    exit. As another user the modes bind already and nothing changes.
    """
    if os.geteuid() != 0:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    header = (ctypes.c_uint32 * 2)(_CAPABILITY_VERSION_3, 0)  # pid 0: this thread
    data = (ctypes.c_uint32 * 6)()  # [effective, permitted, inheritable] x 2 words
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    effective = data[0]
    data[0] = effective & ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH))
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")
    try:
        yield
    finally:
        data[0] = effective
        if libc.capset(header, data) != 0:
            raise OSError(ctypes.get_errno(), "capset failed: capabilities not restored")


def sim_bars(symbol: Symbol, first: date, days: int, seed: int = 1) -> pa.Table:
    """The simulator's bars (realistic prices and volumes) for ``days`` days from ``first``."""
    from backfill.sim.lake_form import lake_table
    from backfill.sim.market import bars_between

    start = day_start(first)
    bars = bars_between(seed, symbol.base, start - MINUTE, start + timedelta(days=days) - MINUTE)
    return lake_table(symbol, bars)


def read_coverage(
    lake: Path, symbols: Iterable[Symbol], first: date, last: date
) -> dict[Symbol, dict[date, DayCoverage]]:
    """What the footers record of each symbol's days in ``[first, last]``, every field decoded
    (the tests' oracle: plan and run read only the complete days, ``coverage_index``).

    A part that is missing or whose footer cannot be read records nothing.
    """
    out: dict[Symbol, dict[date, DayCoverage]] = {}
    for symbol in symbols:
        found: dict[date, DayCoverage] = {}
        for month in months_between(first, last):
            try:
                coverage = store.read_part_coverage(part_path(lake, symbol, month))
            except store.CorruptPart:
                continue
            found.update({d: c for d, c in coverage.items() if first <= d <= last})
        out[symbol] = dict(sorted(found.items()))
    return out


@contextlib.contextmanager
def tmpfs(path: Path, *options: str) -> Iterator[Path]:
    """A real tmpfs mounted at ``path`` (made if missing); skips if mounting is refused."""
    path.mkdir(parents=True, exist_ok=True)
    opts = ",".join(options) or "defaults"
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
