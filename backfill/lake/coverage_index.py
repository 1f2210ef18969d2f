"""Which days each part records as complete, remembered by file identity between plans.

The footers are the truth (each part's coverage record); this is a cache of what plan needs
from them, kept in ``<lake>/_cache/coverage.json`` so that a second ``plan`` over 6,000
parts stats them instead of parsing their footers (it then needs no pyarrow at all). An
entry is trusted only while its part's inode, size, mtime and ctime are what they were when
its footer was read: the quick check of git's index and rsync. The store only ever replaces
a part (a new file, so a new inode and ctime), so a rewritten part is read again.

A part changed less than ``RACY_NS`` before the cache is written is not remembered (git's
"racy" rule): on a file system whose clock ticks coarsely, a rewrite within the same tick,
with a recycled inode, could otherwise carry the same stamps (HFS+ and some NFS servers keep
whole seconds). A part replaced between its stat and its footer read leaves an entry under
the older file's identity, which no file has any more: it is read again next time.

``run`` reads the footers themselves (``remember=False``): it acts on what it reads.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from time import time_ns
from typing import TYPE_CHECKING

from backfill.domain import Month, Symbol, months_between
from backfill.lake.lakeio import concurrent_reads, file_listing, presence, write_small
from backfill.lake.objpath import LakePath, lake_path
from backfill.lake.paths import (
    DATA_DIR,
    lake_symbols,
    market_dir,
    month_dirs,
    part_below_symbol,
    part_name,
    symbol_dir,
)
from backfill.lake.safe_json import (
    CACHE_MAX_BYTES,
    BadJson,
    expect_dict,
    read_json_file,
)
from backfill.lake.storage import StorageError

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess
    from multiprocessing.sharedctypes import Synchronized

CACHE_DIR = "_cache"
CACHE_NAME = "coverage.json"
CACHE_VERSION = 1
RACY_NS = 3_000_000_000


@dataclass(frozen=True, slots=True)
class DayMark:
    """What plan needs of a recorded day: done (complete), and empty because IB said so."""

    complete: bool
    no_data: bool = False


COMPLETE = DayMark(True)
COMPLETE_NO_DATA = DayMark(True, True)

# (st_ino, st_size, st_mtime_ns, st_ctime_ns): a part's identity, as the quick check sees it
Identity = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class PartMarks:
    """A part's complete days and, of those, its no-data days, as bits (bit d: day d)."""

    identity: Identity
    complete: int
    no_data: int


def cache_path(lake: LakePath) -> LakePath:
    return lake_path(lake) / CACHE_DIR / CACHE_NAME


def days_in_range(month: Month, bits: int, first: date, last: date) -> Sequence[date]:
    """The days of ``month`` set in ``bits``, within ``[first, last]``."""
    days = _month_days(month)
    start, end = days[0], days[-1]
    lo = first.day if first > start else 1
    hi = last.day if last < end else end.day
    wanted = ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1)
    chosen = bits & wanted
    if not chosen or lo > hi:
        return ()
    if chosen == wanted:
        return days[lo - 1 : hi]
    return [days[d - 1] for d in range(lo, hi + 1) if chosen >> d & 1]


@functools.lru_cache(maxsize=1024)
def _month_days(month: Month) -> tuple[date, ...]:
    """Every day of ``month``, built once: a lake's symbols share their months (100 symbols
    x 60 months ask for 60 months' days 6,000 times; building them each time, and the
    month's first and last day, was a third of a cached plan's reading)."""
    base = month.first_day.toordinal()
    return tuple(map(date.fromordinal, range(base, month.next.first_day.toordinal())))


def rememberable(identity: Identity, now_ns: int) -> bool:
    """Old enough that a later rewrite cannot share its stamps (see ``RACY_NS``)."""
    _, _, mtime_ns, ctime_ns = identity
    return max(mtime_ns, ctime_ns) < now_ns - RACY_NS


def read_day_marks(
    lake: LakePath,
    symbols: Iterable[Symbol],
    first: date,
    last: date,
    *,
    remember: bool = True,
    clock: Callable[[], int] | None = None,
) -> dict[Symbol, dict[date, DayMark]]:
    """Each symbol's complete days in ``[first, last]``, from its parts' footers.

    A part whose footer cannot be read counts as no coverage: its days will be fetched again.
    With ``remember``, footers already read (and unchanged since) come from the cache, and
    the cache is updated (best effort: a read-only lake is planned all the same); ``clock``
    (nanoseconds since the epoch, default the system's) judges which parts are old enough
    to remember.
    """
    lake = lake_path(lake)
    symbols = list(dict.fromkeys(symbols))
    known = _load(lake) if remember else {}
    months = months_between(first, last)
    # First every part's identity (a stat each in a folder, one listing per symbol on a
    # store), then the footers not remembered, read at once. Each part found: its marks if
    # remembered, else the index of its footer in ``misses``.
    found: list[tuple[Symbol, str, Month, PartMarks | int]] = []
    misses: list[Miss] = []
    learned: dict[str, PartMarks | None] = {}
    belows = [(month, part_below_symbol(month)) for month in months]  # the same for each symbol
    width = concurrent_reads(lake)
    folders = [symbol_dir(lake, symbol) for symbol in symbols]
    if width > 1:  # one listing per symbol on a store, each a round trip: several at once
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=width) as pool:
            listings = list(pool.map(file_listing, folders))
    else:
        listings = [file_listing(folder) for folder in folders]
    for symbol, listing in zip(symbols, listings, strict=True):
        prefix = f"symbol={symbol}/"
        for month, below in belows:
            key = prefix + below
            identity, path = listing.identity(below)
            if identity is None:  # not there (or not stat-able): nothing covered
                if key in known:
                    learned[key] = None
                continue
            marks = known.get(key)
            if marks is not None and marks.identity == identity:
                found.append((symbol, key, month, marks))
            else:
                found.append((symbol, key, month, len(misses)))
                misses.append(Miss(path, month, identity))
    if width > 1:  # each read waits on a round trip: several in flight, on threads
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=width) as pool:
            read = list(pool.map(_read_marks, misses))
    else:
        read = read_footers(misses)
    out: dict[Symbol, dict[date, DayMark]] = {symbol: {} for symbol in symbols}
    for symbol, key, month, entry in found:
        if isinstance(entry, int):
            entry = learned[key] = read[entry]
        days = days_in_range(month, entry.complete, first, last)
        if entry.no_data:
            out[symbol].update(
                (day, COMPLETE_NO_DATA if entry.no_data >> day.day & 1 else COMPLETE)
                for day in days
            )
        else:
            out[symbol].update(dict.fromkeys(days, COMPLETE))
    if remember and learned:
        _save(lake, known, learned, (clock or time_ns)())
    return out


@dataclass(frozen=True, slots=True)
class Miss:
    """A part whose footer must be read: where, which month, and its identity before."""

    path: str | LakePath  # what ``lakeio.file_listing`` named it: a local path, or an object
    month: Month
    identity: Identity


def read_footers(misses: list[Miss]) -> list[PartMarks]:
    """Each miss's marks, read by forked helpers while this process waits (one helper for
    every ``PER_HELPER`` misses, at most one a core and ``HELPERS``); by this process for
    fewer than ``HELPERS_FROM`` misses or if it has threads (pyarrow is loaded already).

    This process then never imports pyarrow (0.15 s of CPU with numpy), and a helper imports
    only its Parquet reader, without numpy (a footer needs none: 0.06 s), so a hundred
    changed parts are cheaper read by a helper. (A few are read here: a caller that reads a
    part at a time, as ``held_scope`` does, pays pyarrow's import once, not a helper's each
    time.) The helpers take chunks from a shared counter, so none
    waits on another when one core is slower. They are forked only while this process has a
    single thread (before pyarrow, whose allocator and numpy start threads, is imported
    here), so the fork is safe. Whatever a helper that could not start or died did not send,
    this process reads itself.
    """
    if len(misses) < HELPERS_FROM or not _single_threaded():
        return [_read_marks(m) for m in misses]
    helpers = max(1, min(_cores(), HELPERS, -(-len(misses) // PER_HELPER)))
    import multiprocessing

    context = multiprocessing.get_context("fork")
    taken = context.Value("q", 0)
    found: list[PartMarks | None] = [None] * len(misses)
    started: list[tuple[BaseProcess, Connection]] = []
    try:
        for _ in range(helpers):
            receiver, sender = context.Pipe(duplex=False)
            helper: BaseProcess = context.Process(
                target=_read_for_parent, args=(misses, taken, sender), daemon=True
            )
            started.append((helper, receiver))
            with contextlib.suppress(OSError):  # no helper: the others, or this process
                helper.start()
            sender.close()
        for helper, receiver in started:
            if helper.pid is not None:
                with contextlib.suppress(EOFError, OSError):  # a helper that died sent nothing
                    for start, rows in receiver.recv():
                        found[start : start + len(rows)] = [PartMarks(*row) for row in rows]
    finally:
        for helper, receiver in started:
            receiver.close()
            if helper.pid is not None:
                # Done (it has sent all it will), or this process is being interrupted:
                # either way nothing is left for it to do.
                helper.kill()
                helper.join()
    return [
        m if m is not None else _read_marks(miss) for m, miss in zip(found, misses, strict=True)
    ]


HELPERS = 4  # at most: 6,000 footers are 0.7 s of one core, a helper's start-up 0.05 s
HELPERS_FROM = 32  # fewer misses: read here
PER_HELPER = 500  # misses a helper's start-up (a fork, pyarrow's reader: 0.06 s) pays for
CHUNK = 64  # misses taken at a time: small enough to even out, large enough not to contend


def _read_chunks(misses: list[Miss], taken: Synchronized) -> Iterator[tuple[int, list[PartMarks]]]:
    """The next untaken chunk, read, until none is left (or the counter's lock is held
    longer than any taking of a chunk takes: its holder was killed; the plan process then
    reads whatever is left unread itself)."""
    lock = taken.get_lock()
    while True:
        if not lock.acquire(timeout=1.0):
            return
        try:
            start = taken.value
            taken.value = start + CHUNK
        finally:
            lock.release()
        if start >= len(misses):
            return
        yield start, [_read_marks(m) for m in misses[start : start + CHUNK]]


def _read_for_parent(misses: list[Miss], taken: Synchronized, sender: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    # pyarrow imports numpy if it can (0.1 s of CPU), and a footer needs none: this process
    # only reads footers and exits (were one to need it, the ImportError ends this helper
    # and the parent reads what it did not send).
    sys.modules.setdefault("numpy", None)  # type: ignore[arg-type]
    with contextlib.suppress(OSError):  # the parent is gone (killed): nobody to tell
        sender.send(
            [
                (start, [(m.identity, m.complete, m.no_data) for m in marks])
                for start, marks in _read_chunks(misses, taken)
            ]
        )
    sender.close()


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _single_threaded() -> bool:
    """No other thread, not even a native one (numpy's and pyarrow's are not in threading)."""
    if threading.active_count() != 1:
        return False
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:  # no /proc (not Linux): no fork
        return False


def _read_marks(miss: Miss) -> PartMarks:
    """A part's marks from its footer (no coverage if it cannot be read)."""
    # pyarrow is imported on a miss only: a warm plan does without it (0.2 s of start-up);
    # and only its Parquet reader (footers, not the store: 0.06 s less for each helper).
    from backfill.lake import footers
    from backfill.lake.errors import CorruptPart
    from backfill.lake.schema import coverage_bits

    try:
        complete, no_data = coverage_bits(
            footers.read_coverage_record(miss.path), miss.month.year, miss.month.month
        )
    except (CorruptPart, ValueError):
        complete = no_data = 0
    return PartMarks(miss.identity, complete, no_data)


def _load(lake: LakePath) -> dict[str, PartMarks]:
    """The cache, or nothing if it is missing, unreadable, of another version or malformed
    in any entry (it is input: ``safe_json`` bounds its size and nesting, and each entry is
    checked for type and range, so ``complete: -1`` never marks a month done)."""
    try:
        record = expect_dict(read_json_file(cache_path(lake), CACHE_MAX_BYTES), "cache")
        if record.get("version") != CACHE_VERSION:
            return {}
        return {
            _cache_key(key): _cache_entry(entry)
            for key, entry in expect_dict(record.get("parts"), "parts").items()
        }
    except BadJson:
        return {}


_STAMP_MAX = 1 << 63  # st_ino, st_size and the ns times fit a signed 64-bit integer
_DAY_BITS = ((1 << 32) - 1) ^ 1  # bits 1..31: the days of a month
_INTS = {int}


def _cache_key(key: str) -> str:
    if len(key) > 200 or not key.startswith("symbol=") or ".." in key:
        raise BadJson("not a part's path")
    return key


def _cache_entry(entry: object) -> PartMarks:
    # Checked inline (a warm plan loads 6,000): ``type(v) is int`` refuses a bool and a float.
    if type(entry) is not list or len(entry) != 6 or {*map(type, entry)} != _INTS:
        raise BadJson("entry: expected 6 integers")
    ino, size, mtime, ctime, complete, no_data = entry
    if min(ino, size, mtime, ctime) < 0 or max(ino, size, mtime, ctime) >= _STAMP_MAX:
        raise BadJson("entry: a file stamp out of range")
    if complete & ~_DAY_BITS or no_data & ~complete:  # -1 has every bit: refused here
        raise BadJson("entry: days outside 1..31, or no-data days not complete")
    return PartMarks((ino, size, mtime, ctime), complete, no_data)


def _save(
    lake: LakePath, known: dict[str, PartMarks], learned: dict[str, PartMarks | None], now_ns: int
) -> None:
    """Write the merged cache atomically; any OS error leaves the cache as it was."""
    if not (lake / DATA_DIR).is_dir():
        return  # a lake with no parts: plan creates nothing
    # Only parts that exist are kept (a cache copied from another lake, or grown by hand,
    # shrinks back to this lake's parts the first time it is written).
    there = presence(market_dir(lake))  # a stat each in a folder; a store's listing says
    parts = {key: marks for key, marks in known.items() if key in learned or there(key)}
    for key, marks in learned.items():
        if marks and rememberable(marks.identity, now_ns):
            parts[key] = marks
        else:
            parts.pop(key, None)
    if parts == known:
        return
    record = {
        "version": CACHE_VERSION,
        "parts": {key: [*m.identity, m.complete, m.no_data] for key, m in sorted(parts.items())},
    }
    with contextlib.suppress(OSError, StorageError):  # best effort: a read-only lake plans
        write_small(
            cache_path(lake), json.dumps(record, separators=(",", ":")).encode(), durable=False
        )


def held_scope(lake: Path) -> tuple[list[Symbol], date | None]:
    """The symbols the lake holds and the first day any of them holds (None: no day): what
    a bare ``backfill plan`` in a lake plans, when no symbols or --from are given."""
    symbols = lake_symbols(lake)
    firsts = []
    for symbol in symbols:
        month = next(
            (m for m, folder in month_dirs(lake, symbol) if (folder / part_name(m)).is_file()), None
        )
        if month is None:
            continue
        marks = read_day_marks(lake, [symbol], month.first_day, month.last_day)[symbol]
        firsts.append(min(marks, default=month.first_day))
    return symbols, min(firsts, default=None)
