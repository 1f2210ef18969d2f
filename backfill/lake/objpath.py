"""A place in an ``s3://`` lake that answers the questions the lake's code asks of a ``Path``.

The lake's readers walk folders (``iterdir``, ``is_dir``, ``is_file``), read files whole
(``read_bytes``, ``read_text``) and build paths (``/``, ``parent``, ``name``, ``relative_to``).
``ObjectPath`` answers those from the object store (folders are common prefixes), so the code
that walks a local lake walks an ``s3://`` one unchanged; writes do not go through it but
through ``Storage`` (``backfill.lake.storage``), whose puts are conditional. It is a frozen
value (a ``LakeLocation`` and a key): it pickles into worker processes, and each process opens
its own store on first use, with credentials from the standard AWS variables.

It deliberately has no ``__fspath__``: code that would hand it to ``open`` or ``os.*`` fails
loudly rather than touching a local file of the same name.
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from backfill.lake.storage import (
    OVERWRITE,
    LakeLocation,
    NotFound,
    ObjectMeta,
    ObjectStorage,
    Storage,
    _children,
    _tail,
    open_storage,
)

_OPEN: dict[LakeLocation, Storage] = {}


def storage_of(location: LakeLocation) -> Storage:
    """This process's store for ``location`` (opened once per process)."""
    store = _OPEN.get(location)
    if store is None:
        store = _OPEN[location] = open_storage(location)
    return store


@dataclass(frozen=True)
class _Stat:
    st_size: int
    st_mtime: float
    st_mtime_ns: int
    version: str


@dataclass(frozen=True, order=True)
class ObjectPath:
    """``location`` plus a ``/``-separated key below it ('' is the lake root)."""

    location: LakeLocation
    key: str = ""
    # What a listing already said this is ("dir" or "file"): saves a request per question.
    kind: str | None = field(default=None, compare=False, repr=False)

    @classmethod
    def root(cls, location: LakeLocation) -> ObjectPath:
        return cls(location, "", "dir")

    # ------------------------------------------------------------------ pure path
    def __str__(self) -> str:
        return f"{self.location.url}/{self.key}" if self.key else self.location.url

    def __fspath__(self) -> str:  # pragma: no cover - documented absence, see module doc
        raise TypeError(f"{self} is in an object store, not a local file")

    def __truediv__(self, other: str | PurePosixPath) -> ObjectPath:
        extra = str(other).strip("/")
        if not extra:
            return self
        return ObjectPath(self.location, f"{self.key}/{extra}" if self.key else extra)

    def joinpath(self, *others: str) -> ObjectPath:
        result = self
        for other in others:
            result = result / other
        return result

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1] if self.key else ""

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem if self.name else ""

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix if self.name else ""

    @property
    def parent(self) -> ObjectPath:
        if "/" not in self.key:
            return ObjectPath(self.location, "", "dir")
        return ObjectPath(self.location, self.key.rsplit("/", 1)[0], "dir")

    @property
    def parts(self) -> tuple[str, ...]:
        return (self.location.url, *(self.key.split("/") if self.key else ()))

    def with_name(self, name: str) -> ObjectPath:
        return self.parent / name

    def with_suffix(self, suffix: str) -> ObjectPath:
        return self.with_name(self.stem + suffix)

    def relative_to(self, other: ObjectPath | Path | str) -> PurePosixPath:
        if not isinstance(other, ObjectPath) or other.location != self.location:
            raise ValueError(f"{self} is not below {other}")
        if not other.key:
            return PurePosixPath(self.key)
        if self.key == other.key:
            return PurePosixPath()
        if not self.key.startswith(other.key + "/"):
            raise ValueError(f"{self} is not below {other}")
        return PurePosixPath(self.key[len(other.key) + 1 :])

    def is_relative_to(self, other: Any) -> bool:
        try:
            self.relative_to(other)
        except ValueError:
            return False
        return True

    def as_posix(self) -> str:
        return str(self)

    def resolve(self) -> ObjectPath:
        return self

    def absolute(self) -> ObjectPath:
        return self

    def expanduser(self) -> ObjectPath:
        return self

    # ------------------------------------------------------------------ the store
    @property
    def storage(self) -> Storage:
        return storage_of(self.location)

    def head(self) -> ObjectMeta | None:
        return self.storage.head(self.key) if self.key else None

    def is_file(self) -> bool:
        if self.kind is not None:
            return self.kind == "file"
        if (snap := _snapshot(self)) is not None:
            return self.key in snap.files
        return bool(self.key) and self.head() is not None

    def is_dir(self) -> bool:
        if self.kind is not None:
            return self.kind == "dir"
        if (snap := _snapshot(self)) is not None:
            return self.key in snap.children
        store = self.storage
        if not isinstance(store, ObjectStorage):  # pragma: no cover
            return False
        folders, objects = _children(store, self.key + "/" if self.key else "")
        return bool(folders or objects) or (not self.key and _bucket_exists(store))

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def iterdir(self) -> Iterator[ObjectPath]:
        if (snap := _snapshot(self)) is not None:
            for name in sorted(snap.children.get(self.key, ())):
                key = f"{self.key}/{name}" if self.key else name
                yield ObjectPath(self.location, key, "file" if key in snap.files else "dir")
            return
        store = self.storage
        assert isinstance(store, ObjectStorage)
        folders, objects = _children(store, self.key + "/" if self.key else "")
        for prefix in sorted(folders):
            yield ObjectPath(self.location, prefix, "dir")
        for meta in sorted(objects, key=lambda m: m.key):
            yield ObjectPath(self.location, meta.key, "file")

    def walk_files(self) -> Iterator[tuple[ObjectPath, ObjectMeta]]:
        """Every object below this folder (one listing, paged), hidden names included."""
        if (snap := _snapshot(self)) is not None:
            below = self.key + "/" if self.key else ""
            for key in sorted(snap.files):
                if key.startswith(below):
                    yield ObjectPath(self.location, key, "file"), snap.files[key]
            return
        store = self.storage
        assert isinstance(store, ObjectStorage)
        prefix = self.key + "/" if self.key else ""
        try:
            for chunk in store._obs.list(store.store, prefix or None):
                for raw in chunk:
                    meta = store._meta(raw)
                    yield ObjectPath(self.location, meta.key, "file"), meta
        except Exception as exc:
            from backfill.lake.storage import _translate

            raise _translate(exc, prefix) from exc

    def glob(self, pattern: str) -> Iterator[ObjectPath]:
        """Direct children matching ``pattern`` (no ``**``: the lake's code never asks)."""
        for child in self.iterdir():
            if fnmatch.fnmatchcase(child.name, pattern):
                yield child

    def stat(self) -> _Stat:
        meta = self.head()
        if meta is None:
            raise FileNotFoundError(str(self))
        stamp = meta.modified.timestamp()
        return _Stat(meta.size, stamp, int(stamp * 1e9), meta.version)

    def read_bytes(self) -> bytes:
        try:
            return self.storage.get(self.key)[0]
        except NotFound as exc:
            raise FileNotFoundError(2, "No such object", str(self)) from exc

    def read_text(self, encoding: str | None = "utf-8", errors: str | None = None) -> str:
        return self.read_bytes().decode(encoding or "utf-8", errors or "strict")

    def read_tail(self, length: int) -> tuple[bytes, int]:
        """The last ``length`` bytes and the object's size, in one request."""
        store = self.storage
        assert isinstance(store, ObjectStorage)
        try:
            data, size, _ = _tail(store, self.key, length)
        except NotFound as exc:
            raise FileNotFoundError(2, "No such object", str(self)) from exc
        return data, size

    def open(self, mode: str = "r", encoding: str | None = None, **_: Any) -> Any:
        if mode not in ("r", "rb", "rt"):
            raise io.UnsupportedOperation(f"{self}: objects are written whole, not opened")
        data = self.read_bytes()
        if mode == "rb":
            return io.BytesIO(data)
        return io.StringIO(data.decode(encoding or "utf-8"))

    def write_bytes(self, data: bytes) -> int:
        self.storage.put(self.key, bytes(data), OVERWRITE)
        return len(data)

    def write_text(self, text: str, encoding: str | None = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding or "utf-8"))

    def mkdir(self, *_: Any, **__: Any) -> None:
        """Folders are prefixes: nothing to make."""

    def unlink(self, missing_ok: bool = False) -> None:
        if not missing_ok and self.head() is None:
            raise FileNotFoundError(str(self))
        self.storage.delete(self.key)


@dataclass
class _Snapshot:
    prefix: str  # '' for the lake root
    files: dict[str, ObjectMeta]
    children: dict[str, set[str]]  # folder key -> the names directly in it


_SNAPSHOTS: dict[LakeLocation, _Snapshot] = {}


def _snapshot(path: ObjectPath) -> _Snapshot | None:
    snap = _SNAPSHOTS.get(path.location)
    if snap is None:
        return None
    if snap.prefix and path.key != snap.prefix and not path.key.startswith(snap.prefix + "/"):
        return None
    return snap


@contextlib.contextmanager
def listed_once(root: Path | ObjectPath) -> Iterator[None]:
    """Within the block, folder questions below ``root`` (an object store lake) are answered
    from one listing made at its start, not a listing per folder: for read-only walks
    (``verify``), which read what they find by a get of its own."""
    if not isinstance(root, ObjectPath) or root.location in _SNAPSHOTS:
        yield
        return
    files = {p.key: meta for p, meta in root.walk_files()}
    children: dict[str, set[str]] = {root.key: set()}
    for key in files:
        parts = key.split("/")
        for depth in range(len(parts)):
            parent = "/".join(parts[:depth])
            children.setdefault(parent, set()).add(parts[depth])
    _SNAPSHOTS[root.location] = _Snapshot(root.key, files, children)
    try:
        yield
    finally:
        _SNAPSHOTS.pop(root.location, None)


def _bucket_exists(store: ObjectStorage) -> bool:
    # The root of an empty lake: the bucket answered the listing, so the lake is usable.
    return True


def open_object_lake(url: str) -> ObjectPath:
    """The root of an ``s3://`` lake, after one listing that proves the store usable; a
    missing extra, bucket, credential or endpoint is ``BadInput`` (one line, no secret)."""
    from backfill.domain import BadInput
    from backfill.lake.storage import MissingExtra, StorageError

    try:
        root = ObjectPath.root(LakeLocation.parse(url))
        store = storage_of(root.location)
        assert isinstance(store, ObjectStorage)
        _children(store, root.key)
    except ValueError as exc:
        raise BadInput(f"--lake {exc}") from None
    except MissingExtra as exc:
        raise BadInput(str(exc)) from None
    except StorageError as exc:
        raise BadInput(f"--lake {url}: {exc}") from None
    return root


def open_lake(raw: str | os.PathLike[str] | ObjectPath) -> LakePath:
    """A lake root from what the user gave (``--lake``, ``LAKE_ROOT``, ``backfill.toml``): a
    folder, or an object store lake, opened and listed once, so that a missing extra,
    bucket, credential or endpoint is ``BadInput`` (one line, exit 2)."""
    if isinstance(raw, ObjectPath):
        return raw
    text = os.fspath(raw)
    if text.startswith("s3:/"):  # a typer Path option folds s3://b/p into s3:/b/p
        return open_object_lake("s3://" + text[4:].lstrip("/"))
    return Path(text)


# A place in a lake, whichever backend holds it: what the modules above the storage layer
# take and hand on (they ask it ``Path``'s questions; ``backfill.lake.lakeio`` does what the
# backends do differently).
LakePath = Path | ObjectPath


def lake_path(text: str | os.PathLike[str] | ObjectPath) -> LakePath:
    """A lake root from what the user typed: a ``Path`` for a folder, an ``ObjectPath`` for
    ``s3://bucket/prefix``."""
    if isinstance(text, ObjectPath):
        return text
    raw = os.fspath(text)
    if raw.startswith("s3://"):
        return ObjectPath.root(LakeLocation.parse(raw))
    return Path(raw)


def is_object(path: object) -> bool:
    return isinstance(path, ObjectPath)


def write_whole(path: LakePath, data: bytes, *, durable: bool = True) -> None:
    """Replace a small lake file whole (JSON records, caches): readers see the old bytes or the
    new, never half. Local: temp file, fsync (unless not ``durable``: a cache can be lost to
    a power cut), ``os.replace``; object store: one put."""
    if isinstance(path, ObjectPath):
        path.write_bytes(data)
        return
    import random

    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{random.getrandbits(32):08x}.tmp")
    try:
        with open(temp, "wb") as file:
            file.write(data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()


def write_json(path: LakePath, document: Any, **dumps: Any) -> None:
    write_whole(path, json.dumps(document, **dumps).encode("utf-8"))


def update_whole(
    path: ObjectPath, change: Callable[[bytes | None], bytes], attempts: int = 8
) -> None:
    """Read-modify-write of a small object by compare-and-swap (heads, probe findings):
    ``change`` gets the bytes read (None: none yet) and returns the new ones; a writer that
    got there first makes this one read and change again. ``WriteConflict`` after
    ``attempts``."""
    import random
    import time

    from backfill.lake.storage import CREATE, Version, WriteConflict

    store = path.storage
    for attempt in range(attempts):
        try:
            data, meta = store.get(path.key)
            version: str | None = meta.version
        except NotFound:
            data, version = None, None
        try:
            store.put(path.key, change(data), CREATE if version is None else Version(version))
            return
        except WriteConflict:
            time.sleep(random.uniform(0, 0.05 * 2**attempt))
    raise WriteConflict(f"{path.key}: other writers kept changing it")


def arrow_source(path: Path | ObjectPath) -> Any:
    """What pyarrow's readers take for ``path``: the path itself for a local file (pyarrow
    reads only what it needs), the object's bytes in memory for an object store."""
    if isinstance(path, ObjectPath):
        return bytes_reader(path.read_bytes())
    return path


def bytes_reader(data: bytes) -> Any:
    """A pyarrow reader over a copy of ``data`` in Arrow's own memory, never over the
    Python object itself.

    Why the copy (a fraction of a millisecond a megabyte, beside the decoding): a reader over
    a Python buffer holds it through a ``PyBuffer`` whose destructor takes the GIL, and Arrow's
    pool threads that decode a Parquet file may drop the last reference to the source after
    ``read()`` has returned. When that lands while the interpreter finalises, CPython ends the
    pool thread inside that C++ destructor and the process aborts with SIGABRT ("terminate
    called without an active exception") after it has printed its whole report. Memory Arrow
    owns is freed with no GIL, on whichever thread, at any time."""
    import pyarrow as pa

    buffer = pa.allocate_buffer(len(data))
    memoryview(buffer).cast("B")[:] = data
    return pa.BufferReader(buffer)


# ------------------------------------------------------------------ walking a lake (verify)

_Place = TypeVar("_Place", Path, ObjectPath)


def walk_lake_files(
    root: _Place, skip: set[_Place] | frozenset[_Place] = frozenset()
) -> Iterator[_Place]:
    """Every file below ``root``, hidden folders too (DuckDB enters them), in a stable order,
    but none below a folder of ``skip``. A store: one listing of the prefix (none within
    ``listed_once``), sorted by key; a folder: ``os.walk``, each folder's files (sorted) before
    its folders (sorted)."""
    if isinstance(root, ObjectPath):
        for path, _ in sorted(root.walk_files()):
            if not any(path.is_relative_to(folder) for folder in skip):
                yield path
        return
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if here / d not in skip)
        for name in sorted(files):
            yield here / name
