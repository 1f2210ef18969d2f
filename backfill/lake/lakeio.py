"""What a local folder and an object store do differently with the lake's files, one function
each, so that no module above the storage layer learns which backend a lake has (design.md,
"The lake on object storage": one storage interface sits under the store).

- small whole files (heads, findings, sends, the plan cache): ``write_small`` replaces one,
  ``update_small`` reads, changes and replaces one safely against other writers (a file lock
  and ``os.replace`` in a folder; compare-and-swap on a store);
- bounded reads of files that are input (``read_bounded``, ``open_bounded``): a FIFO in a
  folder is refused without blocking; an object's size is known from a head first;
- run logs (``open_append_log``): appended line by line in a folder; put whole at most every
  ``FLUSH_S`` on a store, which cannot append;
- the conditional-write check of a run (``conditional_writes_honoured``): trivially true in
  a folder, a probe object written twice on a store;
- Parquet footers (``footer_source``): the file opened in a folder, the object's tail alone
  fetched from a store;
- a part's storage and key (``storage_target``) for the store's commit loop;
- plan's look at many parts (``file_listing``, ``concurrent_reads``, ``presence``): a stat
  per part in a folder, one listing per symbol on a store.

Run locks (a file lock or a lease) are ``backfill.lake.lease.run_lock``.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from backfill.lake.errors import BadJson
from backfill.lake.objpath import LakePath, ObjectPath, update_whole, write_whole
from backfill.lake.storage import (
    LakeLocation,
    LocalStorage,
    ObjectMeta,
    Storage,
    StorageError,
    honours_conditions,
)

# A part's identity while plan's cache trusts what its footer said: (inode, size, mtime_ns,
# ctime_ns) in a folder; (a 56-bit digest of the ETag, size, 0, 0) on a store.
Identity = tuple[int, int, int, int]

# ------------------------------------------------------------------------- small files


def write_small(path: LakePath, data: bytes, *, durable: bool = True) -> None:
    """Replace a small lake file whole: readers see the old bytes or the new, never half.
    A folder: temp file, fsync (unless not ``durable``: a cache), ``os.replace``; a store:
    one put."""
    write_whole(path, data, durable=durable)


def update_small(
    path: LakePath, change: Callable[[bytes | None], bytes], *, max_bytes: int
) -> None:
    """Read-modify-write of a small lake file (heads, a gateway's findings) against other
    writers: ``change`` gets the bytes there (None: none, or none usable) and returns the
    new ones. A folder: under the file's lock (``.<name>.lock``), written whole with fsync;
    a store: compare-and-swap, read and changed again when another writer got there first.
    ``OSError`` (``WriteConflict`` on a store) if it cannot be written."""
    if isinstance(path, ObjectPath):
        update_whole(path, change)
        return
    import filelock

    path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(path.with_name(f".{path.name}.lock")):
        try:
            old = read_bounded(path, max_bytes)
        except BadJson:  # not usable: written afresh
            old = None
        write_whole(path, change(old))


def read_bounded(path: LakePath | str, max_bytes: int) -> bytes | None:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``; None if there
    is no such file; else ``BadJson`` (never blocks on a FIFO, never reads past the cap).
    On an object store: its size from a head, then one get; a store that fails is BadJson."""
    if isinstance(path, ObjectPath):
        return _read_object(path, max_bytes)
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadJson(f"cannot open: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadJson("not a regular file")
        if info.st_size > max_bytes:
            raise BadJson(f"{info.st_size} bytes, more than {max_bytes}")
        chunks, total = [], 0
        while total <= max_bytes:  # the size can grow after fstat: read one byte past it
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise BadJson(f"more than {max_bytes} bytes")
    except OSError as exc:
        raise BadJson(f"cannot read: {exc.strerror}") from exc
    finally:
        os.close(fd)
    return b"".join(chunks)


def open_bounded(path: LakePath | str) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (a FIFO is refused without
    blocking); ``FileNotFoundError`` if absent, ``BadJson`` if not a regular file."""
    if isinstance(path, ObjectPath):
        import io

        data = _read_object(path, 1 << 40)
        if data is None:
            raise FileNotFoundError(str(path))
        return io.BytesIO(data)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BadJson("not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_object(path: ObjectPath, max_bytes: int) -> bytes | None:
    try:
        meta = path.head()
        if meta is None:
            return None
        if meta.size > max_bytes:
            raise BadJson(f"{meta.size} bytes, more than {max_bytes}")
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except (OSError, StorageError) as exc:
        raise BadJson(f"cannot read: {exc}") from exc
    if len(data) > max_bytes:
        raise BadJson(f"more than {max_bytes} bytes")
    return data


# ------------------------------------------------------------------------- run logs


class AppendLog(Protocol):
    """A log written a line at a time; ``failure`` says why it stopped taking lines."""

    failure: str

    def append(self, line: bytes) -> bool:
        """Add ``line`` (False once the log has failed; ``ValueError`` if closed)."""
        ...

    def note(self, line: bytes) -> None:
        """Add ``line`` if it can be (best effort: a failure here ends nothing)."""
        ...

    def close(self) -> None: ...


def open_append_log(path: LakePath) -> AppendLog:
    """A log at ``path`` that exists from the start. A folder: appended with one ``write``
    a line, so a crash loses at most that line. A store, which cannot append: the whole
    object put at most every ``FLUSH_S`` (and at close), so a crash loses at most that
    interval's lines."""
    if isinstance(path, ObjectPath):
        return _ObjectLog(path)
    return _FileLog(path)


class _FileLog:
    """Appends to a local file; a write that fails (disk full) is undone to the last whole
    line and ends the log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failure = ""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size

    def append(self, line: bytes) -> bool:
        if self._fd is None:
            if self.failure:
                return False
            raise ValueError(f"run log {self.path} is closed")
        try:
            written = os.write(self._fd, line)
            if written != len(line):
                raise OSError(28, os.strerror(28))  # a short write is the disk filling up
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)  # no half line left behind
            self.failure = f"cannot write the run log {self.path}: {exc.strerror or exc}"
            self.close()
            return False
        self._size += written
        return True

    def note(self, line: bytes) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self._size += os.write(self._fd, line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


FLUSH_S = 2.0  # an object-store run log is put whole at most this often


class _ObjectLog:
    """A run log on an object store: lines kept in memory, the whole object put when
    ``FLUSH_S`` has passed since the last put (by the next line, or by a timer), and at
    close. Puts are unconditional: the run id makes the key this run's own."""

    def __init__(self, path: ObjectPath) -> None:
        self.path = path
        self.failure = ""
        self._lines = bytearray()
        self._dirty = False
        self._closed = False
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._flush()  # the log exists from the start, as a local one does
        self._timer = threading.Thread(target=self._tick, name="runlog-flush", daemon=True)
        self._wake = threading.Event()
        self._timer.start()

    def append(self, line: bytes) -> bool:
        with self._lock:
            if self._closed:
                if self.failure:
                    return False
                raise ValueError(f"run log {self.path} is closed")
            self._lines += line
            self._dirty = True
            due = time.monotonic() - self._last >= FLUSH_S
        if due:
            self._flush()
        return not self.failure

    def note(self, line: bytes) -> None:
        self.append(line)

    def _tick(self) -> None:
        while not self._wake.wait(FLUSH_S):
            if self._dirty:
                self._flush()

    def _flush(self) -> None:
        with self._lock:
            if self.failure:
                return
            data, self._dirty, self._last = bytes(self._lines), False, time.monotonic()
            try:
                self.path.write_bytes(data)
            except (OSError, StorageError) as exc:
                self.failure = f"cannot write the run log {self.path}: {exc}"

    def close(self) -> None:
        if self._closed:
            return
        self._wake.set()
        if self._dirty:
            self._flush()
        self._closed = True


# ------------------------------------------------------------------------- a run's checks


def conditional_writes_honoured(lake: LakePath) -> bool:
    """Whether the lake refuses a create-only write of a key that exists: a folder does (its
    writers hold file locks); a store is asked, by a probe object written twice.
    ``StorageError`` if the store cannot be written at all."""
    if isinstance(lake, ObjectPath):
        return honours_conditions(lake.storage)
    return True


# ------------------------------------------------------------------------- parts


def storage_target(path: LakePath) -> tuple[Storage, str]:
    """The storage holding the part at ``path`` and its key there. A local part is the key
    of its own folder: same lock and temp names as ever, no lake root needed."""
    if isinstance(path, ObjectPath):
        return path.storage, path.key
    return LocalStorage(LakeLocation(str(path.parent))), path.name


def refuse_special(path: LakePath | str) -> None:
    """``OSError`` unless ``path`` is a regular file: a FIFO, a device or a socket in a
    part's place is not read (opening a FIFO blocks until a writer comes). An object is
    bytes, never a FIFO."""
    if isinstance(path, ObjectPath):
        return
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # a folder: the OS says EISDIR
        import errno

        raise OSError(errno.EINVAL, "not a regular file", str(path))


_TAIL_GUESS = 64 * 1024  # one ranged get holds a part's footer (a few KiB) nearly always


def footer_source(path: LakePath | str) -> Any:
    """A pyarrow file (a context manager) from which a Parquet footer can be read, and
    nothing more is. A folder: the file itself, opened (``OSError`` for a FIFO, not a
    block); a store: the object's tail alone (one ranged get, two if the footer is larger
    than the guess), held in memory (``StorageError`` if the store fails,
    ``FileNotFoundError`` if the object is gone). Plan opens 6,000: no generator here."""
    import pyarrow as pa

    if isinstance(path, ObjectPath):
        return pa.PythonFile(_object_tail(path), mode="r")
    refuse_special(path)  # a FIFO would block the open below forever
    return pa.OSFile(path if isinstance(path, str) else str(path))


def _object_tail(path: ObjectPath) -> _Tail:
    tail, size = path.read_tail(_TAIL_GUESS)
    if len(tail) >= 8 and tail[-4:] == b"PAR1":
        needed = int.from_bytes(tail[-8:-4], "little") + 8
        if needed > len(tail) and needed <= size:
            tail, size = path.read_tail(needed)
    return _Tail(tail, size)


class _Tail(io.RawIOBase):
    """A read-only file of ``size`` bytes of which only the tail is held: enough for a
    Parquet reader that reads the footer and nothing else."""

    def __init__(self, tail: bytes, size: int) -> None:
        self._tail, self._size, self._pos = tail, size, 0
        self._start = size - len(tail)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self._pos = {0: 0, 1: self._pos, 2: self._size}[whence] + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int | None = -1) -> bytes:
        if self._pos < self._start:
            raise OSError("read before the fetched footer")
        end = self._size if n is None or n < 0 else min(self._size, self._pos + n)
        data = self._tail[self._pos - self._start : end - self._start]
        self._pos = end
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


# ------------------------------------------------------------------------- plan's scan


class FileListing(Protocol):
    """The files below one folder, each by its path relative to it."""

    def identity(self, below: str) -> tuple[Identity | None, Any]:
        """The file's identity (None: not there, or not a regular file) and its path (a
        ``str`` in a folder, an ``ObjectPath`` on a store: what ``footer_source`` takes)."""
        ...


def file_listing(folder: LakePath) -> FileListing:
    """A folder's files for many questions: a stat each in a folder (a part's identity is
    its inode, size and stamps); one listing on a store (its ETag and size)."""
    if isinstance(folder, ObjectPath):
        return _ObjectListing(folder)
    return _LocalListing(str(folder))


class _LocalListing:
    def __init__(self, folder: str) -> None:
        self.folder = os.path.join(folder, "")

    def identity(self, below: str) -> tuple[Identity | None, str]:
        # Strings: 6,000 pathlib joins cost as much as the rest of a warm plan.
        path = self.folder + below
        try:
            st = os.stat(path)
        except OSError:
            return None, path
        if not stat.S_ISREG(st.st_mode):
            return None, path  # a FIFO or a folder in a part's place holds no coverage
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns), path


class _ObjectListing:
    def __init__(self, folder: ObjectPath) -> None:
        self.folder = folder
        self.listed: dict[str, ObjectMeta] = {p.key: meta for p, meta in folder.walk_files()}

    def identity(self, below: str) -> tuple[Identity | None, ObjectPath]:
        path = self.folder / below
        meta = self.listed.get(path.key)
        if meta is None:
            return None, path
        # An ETag changes whenever the bytes do: no racy window, no stamps needed. It is
        # kept as a 56-bit digest, where a local part keeps its inode.
        return (_etag_digest(meta.version), meta.size, 0, 0), path


def _etag_digest(etag: str) -> int:
    import hashlib  # a store's plan only: not on every command's start-up

    return int.from_bytes(hashlib.blake2b(etag.encode(), digest_size=7).digest(), "big")


def concurrent_reads(lake: LakePath) -> int:
    """How many reads of ``lake`` one process should have in flight: 1 for a folder (a
    footer read is CPU: plan forks helpers for many), 16 for a store (each read waits on a
    round trip; forking a process that holds the store's runtime is not safe)."""
    return 16 if isinstance(lake, ObjectPath) else 1


def presence(folder: LakePath) -> Callable[[str], bool]:
    """Whether a file below ``folder`` may still be there, asked without a request: a stat
    in a folder; always True on a store (a head each would cost a request; a part gone is
    found by the next listing of its symbol)."""
    if isinstance(folder, ObjectPath):
        return lambda _below: True
    base = str(folder)
    return lambda below: os.path.exists(os.path.join(base, below))
