"""Where the lake's bytes live: one small interface, a local folder or an object store.

The store's rules (merge, dedup, coverage) sit above this module and never learn which
backend they have. What a backend promises is the compare-and-swap below: ``put`` with
``CREATE`` fails if the key exists, ``put`` with a ``Version`` fails unless the key still
holds exactly the version that was read. A lost race is a ``WriteConflict``: the caller
reads again, merges again and retries (delta-rs's commit loop).

- ``LocalStorage`` keeps what the local lake always had: a file lock per key around the
  compare and the swap, a temp file, fsync, ``os.replace``, fsync of the folder. A local
  version is the file's identity (inode, size, mtime, ctime): what git's index trusts.
- ``ObjectStorage`` is obstore (S3 or S3-compatible; its in-memory store in tests):
  ``If-None-Match: *`` for ``CREATE``, ``If-Match: <etag>`` for a ``Version``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from filelock import FileLock

UTC = timezone.utc


class StorageError(Exception):
    """Base of the storage errors; ``str`` is one line for the operator, with no secret."""


class WriteConflict(StorageError):
    """Another writer changed the key between our read and our put: read again, retry."""


class NotFound(StorageError):
    """The key does not exist."""


class StoreUnavailable(StorageError):
    """The store cannot be used at all: missing bucket, bad credentials, unreachable."""


class MissingExtra(StorageError):
    """An ``s3://`` lake without the optional dependency installed."""


@dataclass(frozen=True)
class ObjectMeta:
    """What a listing or a head says of one object."""

    key: str  # relative to the lake root, ``/``-separated
    size: int
    version: str  # ETag, or the local file's identity: changes whenever the bytes do
    modified: datetime


class _Create:
    def __repr__(self) -> str:
        return "CREATE"


class _Overwrite:
    def __repr__(self) -> str:
        return "OVERWRITE"


CREATE: Any = _Create()  # fail if the key exists
OVERWRITE: Any = _Overwrite()  # unconditional (run logs, caches: never data)


@dataclass(frozen=True)
class Version:
    """Put only if the key still holds this version (the one we read and merged)."""

    version: str


PutMode = _Create | _Overwrite | Version


class Storage(Protocol):
    """The operations the lake needs, on keys relative to the lake root."""

    location: LakeLocation

    def head(self, key: str) -> ObjectMeta | None: ...

    def get(self, key: str) -> tuple[bytes, ObjectMeta]: ...

    def list(self, prefix: str) -> Iterator[ObjectMeta]: ...

    def put(
        self,
        key: str,
        data: bytes,
        mode: PutMode = OVERWRITE,
        before_replace: Any = None,
        held: bool = False,
    ) -> ObjectMeta:
        """``data`` (bytes, or a buffer such as pyarrow's) at ``key`` if ``mode`` allows.
        ``held``: the caller holds ``key``'s exclusion already (``exclusive``);
        ``before_replace``: a test seam called with the temp file before it replaces the
        key (a backend with no temp file never calls it)."""
        ...

    def exclusive(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Held across a whole read-merge-put: a local lake's writers queue on a file lock;
        a store's do not (their conditional puts retry instead)."""
        ...

    def surely_absent(self, key: str) -> bool:
        """True when ``key`` is known absent without a request (a local folder that does
        not exist); a store cannot know without asking: False."""
        ...

    def delete(self, key: str) -> None: ...

    def move_aside(self, key: str, to_key: str) -> None: ...


@dataclass(frozen=True)
class LakeLocation:
    """A lake root that can cross into worker processes: a folder or ``s3://bucket/prefix``.

    ``options`` hold no secret: credentials come from the standard AWS variables and
    profiles where the store is opened, never from flags or run logs.
    """

    url: str
    options: tuple[tuple[str, str], ...] = field(default=())

    @classmethod
    def parse(cls, text: str | os.PathLike[str]) -> LakeLocation:
        raw = os.fspath(text)
        if raw.startswith("s3://"):
            parts = urlsplit(raw)
            if not parts.netloc:
                raise ValueError(f"{raw}: expected s3://bucket/prefix")
            prefix = parts.path.strip("/")
            return cls(f"s3://{parts.netloc}/{prefix}".rstrip("/"))
        if "://" in raw:
            raise ValueError(f"{raw}: only local folders and s3:// lakes are supported")
        return cls(str(Path(raw).absolute()))

    @property
    def is_object_store(self) -> bool:
        return self.url.startswith("s3://")

    @property
    def bucket(self) -> str:
        return urlsplit(self.url).netloc

    @property
    def prefix(self) -> str:
        return urlsplit(self.url).path.strip("/")

    @property
    def path(self) -> Path:
        """The folder of a local lake."""
        if self.is_object_store:
            raise ValueError(f"{self.url} is not a local folder")
        return Path(self.url)

    def __str__(self) -> str:
        return self.url


def open_storage(location: LakeLocation, **overrides: Any) -> Storage:
    """The backend for ``location`` (``overrides``: object-store settings, for tests)."""
    if location.is_object_store:
        return ObjectStorage.for_s3(location, **overrides)
    return LocalStorage(location)


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("..", ".", "") for p in parts):
        raise ValueError(f"bad lake key {key!r}")
    return key


# ---------------------------------------------------------------------------- local


class LocalStorage:
    """A lake in a local folder: file locks, temp files, fsync, rename."""

    def __init__(self, location: LakeLocation) -> None:
        self.location = location
        self.root = location.path
        self._held: set[str] = set()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def _lock(self, path: Path) -> FileLock:
        # Same name the store has always used, so old and new writers exclude each other.
        # Imported here: plan's footer-reading helpers reach this module and take no lock.
        from filelock import FileLock

        return FileLock(str(path.parent / f".{path.name}.lock"))

    @staticmethod
    def _meta(key: str, st: os.stat_result) -> ObjectMeta:
        version = f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}-{st.st_ctime_ns}"
        return ObjectMeta(key, st.st_size, version, datetime.fromtimestamp(st.st_mtime, UTC))

    def head(self, key: str) -> ObjectMeta | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return self._meta(key, st)

    def get(self, key: str) -> tuple[bytes, ObjectMeta]:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                # The identity is taken from the open file, so bytes and version agree.
                st = os.fstat(f.fileno())
                return f.read(), self._meta(key, st)
        except FileNotFoundError as exc:
            raise NotFound(key) from exc

    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            for name in sorted(files):
                if name.startswith("."):
                    continue  # locks and temp files are the backend's own
                path = Path(folder) / name
                with contextlib.suppress(FileNotFoundError):
                    yield self._meta(path.relative_to(self.root).as_posix(), path.stat())

    @contextlib.contextmanager
    def exclusive(self, key: str) -> Iterator[None]:
        """Hold ``key``'s file lock across a whole read-merge-put (the local lake's writers
        queue rather than retry); temp files left by a killed writer are removed under it."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock(path):
            for stale in path.parent.glob(f".{path.name}.*.tmp"):
                stale.unlink(missing_ok=True)
            self._held.add(key)
            try:
                yield
            finally:
                self._held.discard(key)

    def surely_absent(self, key: str) -> bool:
        return not self._path(key).parent.is_dir()

    def put(
        self,
        key: str,
        data: bytes,
        mode: PutMode = OVERWRITE,
        before_replace: Any = None,
        held: bool = False,
    ) -> ObjectMeta:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        held = held or key in self._held
        with contextlib.nullcontext() if held else self._lock(path):
            current = self.head(key)
            if mode is CREATE and current is not None:
                raise WriteConflict(f"{key} already exists")
            if isinstance(mode, Version) and (current is None or current.version != mode.version):
                raise WriteConflict(f"{key} changed since it was read")
            tmp = path.parent / f".{path.name}.{os.getpid()}.{random.getrandbits(32):08x}.tmp"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())  # the bytes must be on disk before the rename
                if before_replace is not None:
                    before_replace(tmp)  # test seam: crash tests pause a writer here
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            _fsync_dir(path.parent)  # and the rename itself must survive a power cut
            meta = self.head(key)
            assert meta is not None
            return meta

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)  # the removal must survive a power cut too

    def move_aside(self, key: str, to_key: str) -> None:
        src, dst = self._path(key), self._path(to_key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dst)
        _fsync_dir(dst.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a folder
        if exc.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- object store


def _obstore() -> Any:
    try:
        import obstore
    except ImportError as exc:
        raise MissingExtra("an s3:// lake needs obstore: pip install 'backfill[s3]'") from exc
    return obstore


class ObjectStorage:
    """A lake under a prefix of an object store, committed by conditional puts."""

    def __init__(self, location: LakeLocation, store: Any) -> None:
        self.location = location
        self.store = store
        self._obs = _obstore()

    @classmethod
    def for_s3(cls, location: LakeLocation, **overrides: Any) -> ObjectStorage:
        """Credentials, region and endpoint from the standard AWS variables and profiles
        (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``)."""
        _obstore()
        from obstore.store import S3Store

        config: dict[str, Any] = dict(overrides)
        endpoint = (
            config.get("endpoint")
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        if endpoint:
            config["endpoint"] = endpoint
            if endpoint.startswith("http://"):
                config.setdefault("allow_http", True)
        if "region" not in config and not (
            os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        ):
            config["region"] = "us-east-1"
        profile = os.environ.get("AWS_PROFILE")
        credential_provider = None
        if profile and not os.environ.get("AWS_ACCESS_KEY_ID"):
            credential_provider = _profile_credentials(profile)
        # Env (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_REGION)
        # is read by object_store itself.
        store = S3Store(
            location.bucket,
            prefix=location.prefix or None,
            credential_provider=credential_provider,
            **config,
        )
        return cls(location, store)

    def _meta(self, raw: dict[str, Any]) -> ObjectMeta:
        return ObjectMeta(raw["path"], raw["size"], raw.get("e_tag") or "", raw["last_modified"])

    def head(self, key: str) -> ObjectMeta | None:
        _check_key(key)
        try:
            return self._meta(self._obs.head(self.store, key))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise _translate(exc, key) from exc

    def get(self, key: str) -> tuple[bytes, ObjectMeta]:
        _check_key(key)
        try:
            result = self._obs.get(self.store, key)
            data = bytes(result.bytes())
        except FileNotFoundError as exc:
            raise NotFound(key) from exc
        except Exception as exc:
            raise _translate(exc, key) from exc
        return data, self._meta(result.meta)

    def list(self, prefix: str) -> Iterator[ObjectMeta]:
        try:
            for chunk in self._obs.list(self.store, prefix or None):
                for raw in chunk:
                    if PurePosixPath(raw["path"]).name.startswith("."):
                        continue
                    yield self._meta(raw)
        except Exception as exc:
            raise _translate(exc, prefix) from exc

    def exclusive(self, key: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()  # no lock: a lost race is a WriteConflict, retried

    def surely_absent(self, key: str) -> bool:
        return False

    def put(
        self,
        key: str,
        data: bytes,
        mode: PutMode = OVERWRITE,
        before_replace: Any = None,  # no temp file: a put is whole or absent
        held: bool = False,  # no lock to hold
    ) -> ObjectMeta:
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        if not isinstance(data, bytes):
            data = bytes(memoryview(data))  # a pyarrow buffer: obstore takes bytes

        if mode is CREATE:
            wire: Any = "create"
        elif isinstance(mode, Version):
            wire = {"e_tag": mode.version}
        else:
            wire = "overwrite"
        _check_key(key)
        try:
            result = self._obs.put(self.store, key, data, mode=wire)
        except (AlreadyExistsError, PreconditionError) as exc:
            raise WriteConflict(f"{key}: another writer got there first") from exc
        except Exception as exc:
            if _status(exc) in (409, 412):
                raise WriteConflict(f"{key}: another writer got there first") from exc
            raise _translate(exc, key) from exc
        # No head after the put: one request per part written (the put's answer has the ETag).
        return ObjectMeta(key, len(data), result.get("e_tag") or "", datetime.now(UTC))

    def delete(self, key: str) -> None:
        _check_key(key)
        try:
            self._obs.delete(self.store, key)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise _translate(exc, key) from exc

    def move_aside(self, key: str, to_key: str) -> None:
        # An object store has no rename: copy, then delete. A crash between the two leaves
        # both, never neither. S3 has no copy-if-absent; the aside name carries a stamp.
        _check_key(key), _check_key(to_key)
        try:
            self._obs.copy(self.store, key, to_key)
        except FileNotFoundError as exc:
            raise NotFound(key) from exc
        except Exception as exc:
            raise _translate(exc, key) from exc
        self.delete(key)


def _profile_credentials(profile: str) -> Any:
    """Static credentials of an AWS profile from ``~/.aws/credentials`` (no boto3)."""
    import configparser

    path = Path(os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")).expanduser()
    parser = configparser.ConfigParser()
    parser.read(path)
    if not parser.has_section(profile):
        raise StoreUnavailable(f"AWS profile {profile!r} not found in {path}")
    section = parser[profile]
    creds = {
        "access_key_id": section.get("aws_access_key_id", ""),
        "secret_access_key": section.get("aws_secret_access_key", ""),
    }
    if section.get("aws_session_token"):
        creds["token"] = section["aws_session_token"]

    def provide() -> dict[str, str]:
        return creds

    return provide


def _status(exc: BaseException) -> int | None:
    text = str(exc)
    for code in (400, 401, 403, 404, 409, 412, 500, 503):
        if f" {code} " in text or f"status code: {code}" in text:
            return code
    return None


def _translate(exc: BaseException, key: str) -> StorageError:
    """One line the operator can act on, never the request's signed headers."""
    text = str(exc)
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return StoreUnavailable("the bucket does not exist")
    if (
        _status(exc) in (401, 403)
        or "InvalidAccessKeyId" in text
        or "SignatureDoesNotMatch" in text
    ):
        return StoreUnavailable(
            "the store refused the credentials (check AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY or AWS_PROFILE)"
        )
    if "connect" in text.lower() or "dns" in text.lower() or "timed out" in text.lower():
        return StoreUnavailable("the store's endpoint cannot be reached (check AWS_ENDPOINT_URL)")
    return StorageError(f"{key}: {type(exc).__name__}")


# ---------------------------------------------------------------------------- directory view
# What an object store lacks and the lake's readers use: folders (common prefixes) and the
# tail of an object (a Parquet footer) without the rest.


def _children(storage: ObjectStorage, prefix: str) -> tuple[list[str], list[ObjectMeta]]:
    """The immediate sub-prefixes and objects below ``prefix`` (one delimited listing)."""
    try:
        found = storage._obs.list_with_delimiter(storage.store, prefix or None)
    except Exception as exc:
        raise _translate(exc, prefix) from exc
    folders = [p.rstrip("/") for p in found["common_prefixes"]]
    return folders, [storage._meta(raw) for raw in found["objects"]]


def _tail(storage: ObjectStorage, key: str, length: int) -> tuple[bytes, int, ObjectMeta]:
    """The last ``length`` bytes of an object, its size and its meta, in one request."""
    _check_key(key)
    try:
        result = storage._obs.get(storage.store, key, options={"range": {"suffix": length}})
        data = bytes(result.bytes())
    except FileNotFoundError as exc:
        raise NotFound(key) from exc
    except Exception as exc:
        raise _translate(exc, key) from exc
    meta = storage._meta(result.meta)
    return data, meta.size, meta


PROBE_PREFIX = "_locks/.conditional-probe-"


def honours_conditions(storage: Storage) -> bool:
    """Whether the store refuses a create-only put of a key that exists (the whole of the
    lake's safety with several writers rests on it). Writes a probe object twice."""
    key = f"{PROBE_PREFIX}{os.getpid()}-{random.getrandbits(48):012x}"
    storage.put(key, b"probe", CREATE)
    try:
        storage.put(key, b"probe again", CREATE)
    except WriteConflict:
        return True
    finally:
        storage.delete(key)
    return False
