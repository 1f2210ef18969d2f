"""Run locks: one run per symbol at a time. ``run_lock`` gives a symbol's, whichever backend
the lake has: a file lock in a folder, a lease on an object store, both taken with
``acquire()`` (``RunLockHeld`` at once if another run holds it) and given back by ``release()``.

A local lake keeps its file locks (``_locks/<symbol>.run.lock``). An object store has no
locks, so a run holds ``_locks/<symbol>.lease`` instead: taken with a create-only put,
renewed by compare-and-swap (``If-Match`` the ETag it last wrote) every third of its
time-to-live, given back by a compare-and-swap that marks it released. Another run takes it
over only when it is released, or when its ETag has not changed for the lease's TTL timed on
the taker's own monotonic clock: no clock is trusted across machines.

The lease saves work; it does not keep data safe. A run whose lease was taken over (it was
paused longer than the TTL) loses nothing: its parts still commit by conditional put.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from backfill.lake.objpath import LakePath, ObjectPath
from backfill.lake.storage import CREATE, NotFound, StorageError, Version, WriteConflict

LEASE_SUFFIX = ".lease"
DEFAULT_TTL_S = 60.0
TTL_ENV = "BACKFILL_LEASE_TTL_S"  # tests shorten it; operators rarely need to


def lease_ttl() -> float:
    try:
        return max(0.5, float(os.environ.get(TTL_ENV, DEFAULT_TTL_S)))
    except ValueError:
        return DEFAULT_TTL_S


class RunLockHeld(Exception):
    """Another run holds the symbol's run lock."""


class LeaseHeld(RunLockHeld):
    """Another run holds the lease (and has renewed it within its TTL)."""


class RunLock(Protocol):
    def acquire(self) -> None:
        """Take it without waiting (``RunLockHeld`` if another run has it)."""
        ...

    def release(self) -> None: ...


def run_lock(lake: LakePath, symbol: object) -> RunLock:
    """The per-symbol run lock: a file lock in a local lake, a lease on an object store."""
    from backfill.lake.paths import LOCKS_DIR, run_lock_path

    if isinstance(lake, ObjectPath):
        return ObjectLease(lake / LOCKS_DIR / f"{symbol}{LEASE_SUFFIX}")
    return _FileRunLock(run_lock_path(lake, symbol))


class _FileRunLock:
    """A file lock taken without waiting."""

    def __init__(self, path: LakePath) -> None:
        import filelock

        self._timeout = filelock.Timeout
        self._lock = filelock.FileLock(str(path), timeout=0)

    def acquire(self) -> None:
        try:
            self._lock.acquire()
        except self._timeout as exc:
            raise RunLockHeld(f"{exc}") from exc

    def release(self) -> None:
        self._lock.release()


@dataclass
class _Seen:
    version: str
    since: float  # monotonic, this process's clock


# What this process last saw of each lease it could not take: the ETag and since when
# (kept across attempts: the orchestrator makes a new lease object per try).
_SEEN: dict[tuple[str, str], _Seen] = {}
_SEEN_LOCK = threading.Lock()


class ObjectLease:
    """``acquire()`` (non-blocking: ``LeaseHeld``) and ``release()``, like a file lock."""

    def __init__(
        self, path: ObjectPath, ttl_s: float | None = None, clock: object = time.monotonic
    ) -> None:
        self.path = path
        self.ttl_s = lease_ttl() if ttl_s is None else ttl_s
        self.token = secrets.token_hex(8)
        self._clock = clock
        self._version: str | None = None
        self._beat = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    @property
    def is_locked(self) -> bool:
        return self._version is not None and not self.lost

    def _body(self, released: bool = False) -> bytes:
        self._beat += 1  # every write differs, so every write has a new ETag
        return json.dumps(
            {
                "holder": self.token,
                "pid": os.getpid(),
                "beat": self._beat,
                "ttl_s": self.ttl_s,
                "released": released,
            }
        ).encode()

    def acquire(self) -> None:
        store, key = self.path.storage, self.path.key
        try:
            self._version = store.put(key, self._body(), CREATE).version
        except WriteConflict:
            self._take_over_or_raise()
        with _SEEN_LOCK:
            _SEEN.pop((self.path.location.url, key), None)
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew, name=f"lease-{key}", daemon=True)
        self._thread.start()

    def _take_over_or_raise(self) -> None:
        store, key = self.path.storage, self.path.key
        try:
            data, meta = store.get(key)
        except NotFound:
            raise LeaseHeld(f"{key}: released while we looked; try again") from None
        try:
            held = json.loads(data)
            released = bool(held.get("released"))
            ttl = float(held.get("ttl_s", self.ttl_s))
        except (ValueError, AttributeError, TypeError):
            released, ttl = False, self.ttl_s  # unreadable: judged by its ETag alone
        now = self._clock()  # type: ignore[operator]
        with _SEEN_LOCK:
            seen = _SEEN.get((self.path.location.url, key))
            if seen is None or seen.version != meta.version:
                seen = _SEEN[(self.path.location.url, key)] = _Seen(meta.version, now)
        if not released and now - seen.since < ttl:
            raise LeaseHeld(f"{key} is held by another run")
        # Released, or unchanged for a whole TTL on our own clock: its holder is gone.
        # Only one taker can win this put: the others' If-Match fails.
        try:
            self._version = store.put(key, self._body(), Version(meta.version)).version
        except WriteConflict:
            raise LeaseHeld(f"{key} was taken by another run") from None

    def _renew(self) -> None:
        store, key = self.path.storage, self.path.key
        while not self._stop.wait(self.ttl_s / 3):
            version = self._version
            if version is None:
                return
            try:
                self._version = store.put(key, self._body(), Version(version)).version
            except WriteConflict:
                self.lost = True  # taken over: our parts still commit safely
                return
            except StorageError:
                continue  # transient: the next beat tries again, within the TTL

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        version, self._version = self._version, None
        if version is None or self.lost:
            return
        # Marked released by compare-and-swap: never releases a lease taken over. Taken
        # over, or unreachable: the TTL frees it.
        with contextlib.suppress(StorageError):
            self.path.storage.put(self.path.key, self._body(released=True), Version(version))
