"""One contract, every backend: a local folder, obstore's in-memory store, and real S3
(moto's server on 127.0.0.1). A backend that breaks compare-and-swap fails here."""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest

from backfill.lake.storage import (
    CREATE,
    LakeLocation,
    LocalStorage,
    NotFound,
    ObjectStorage,
    Storage,
    StoreUnavailable,
    Version,
    WriteConflict,
    open_storage,
)
from tests.s3server import S3Server, running_s3_server

obstore = pytest.importorskip("obstore")


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture(params=["local", "memory", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path, monkeypatch) -> Storage:
    if request.param == "local":
        return LocalStorage(LakeLocation.parse(tmp_path / "lake"))
    if request.param == "memory":
        from obstore.store import MemoryStore

        return ObjectStorage(LakeLocation("s3://memory/lake"), MemoryStore())
    server: S3Server = request.getfixturevalue("s3_server")
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return open_storage(LakeLocation.parse(f"s3://{server.new_bucket()}/team/lake"))


def test_create_only_once(storage: Storage) -> None:
    first = storage.put("data/a.parquet", b"one", CREATE)
    with pytest.raises(WriteConflict):
        storage.put("data/a.parquet", b"two", CREATE)
    data, meta = storage.get("data/a.parquet")
    assert data == b"one"
    assert meta.version == first.version


def test_put_if_version_matches(storage: Storage) -> None:
    storage.put("k", b"v1", CREATE)
    _, read = storage.get("k")
    second = storage.put("k", b"v2", Version(read.version))
    assert second.version != read.version
    with pytest.raises(WriteConflict):  # a writer still holding v1's version lost the race
        storage.put("k", b"v3", Version(read.version))
    assert storage.get("k")[0] == b"v2"


def test_version_of_a_missing_key_conflicts(storage: Storage) -> None:
    with pytest.raises(WriteConflict):
        storage.put("gone", b"x", Version("whatever"))
    assert storage.head("gone") is None


def test_head_list_get_delete(storage: Storage) -> None:
    assert storage.head("data/x/1") is None
    with pytest.raises(NotFound):
        storage.get("data/x/1")
    for key in ("data/x/1", "data/x/2", "data/y/1", "_runs/r.jsonl"):
        storage.put(key, key.encode())
    assert sorted(m.key for m in storage.list("data/")) == ["data/x/1", "data/x/2", "data/y/1"]
    assert storage.head("data/x/2").size == len(b"data/x/2")
    storage.delete("data/x/1")
    storage.delete("data/x/1")  # deleting what is gone is not an error
    assert storage.head("data/x/1") is None


def test_move_aside_keeps_the_bytes(storage: Storage) -> None:
    storage.put("data/p.parquet", b"bad bytes")
    storage.move_aside("data/p.parquet", "data/_corrupt-p.parquet.bad")
    assert storage.head("data/p.parquet") is None
    assert storage.get("data/_corrupt-p.parquet.bad")[0] == b"bad bytes"


def test_bad_keys_are_refused(storage: Storage) -> None:
    for key in ("", "/abs", "a/../b", "./a"):
        with pytest.raises(ValueError):
            storage.put(key, b"x")


def test_two_writers_racing_lose_nothing(storage: Storage) -> None:
    """Each writer reads, appends its item, and puts if unchanged, retrying on conflict:
    every item of both ends up in the object (the store's commit loop in miniature)."""
    storage.put("counter", b"", CREATE)

    def writer(tag: str) -> None:
        for n in range(15):
            while True:
                data, meta = storage.get("counter")
                try:
                    storage.put("counter", data + f"{tag}{n},".encode(), Version(meta.version))
                    break
                except WriteConflict:
                    continue

    threads = [threading.Thread(target=writer, args=(t,)) for t in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    items = storage.get("counter")[0].decode().rstrip(",").split(",")
    assert sorted(items) == sorted(f"{t}{n}" for t in "ab" for n in range(15))


def _local_writer(root: str, tag: str, rounds: int) -> None:
    storage = LocalStorage(LakeLocation.parse(root))
    for n in range(rounds):
        while True:
            data, meta = storage.get("counter")
            try:
                storage.put("counter", data + f"{tag}{n},".encode(), Version(meta.version))
                break
            except WriteConflict:
                continue


def test_local_writers_in_processes_lose_nothing(tmp_path) -> None:
    storage = LocalStorage(LakeLocation.parse(tmp_path))
    storage.put("counter", b"", CREATE)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_local_writer, args=(str(tmp_path), t, 20)) for t in "xyz"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    items = storage.get("counter")[0].decode().rstrip(",").split(",")
    assert sorted(items) == sorted(f"{t}{n}" for t in "xyz" for n in range(20))
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_location_parsing() -> None:
    loc = LakeLocation.parse("s3://bucket/a/b/")
    assert (loc.is_object_store, loc.bucket, loc.prefix, str(loc)) == (
        True,
        "bucket",
        "a/b",
        "s3://bucket/a/b",
    )
    assert LakeLocation.parse("s3://bucket").prefix == ""
    assert not LakeLocation.parse("relative/lake").is_object_store
    assert LakeLocation.parse("relative/lake").path.is_absolute()
    for bad in ("s3://", "gs://bucket/x", "http://host/x"):
        with pytest.raises(ValueError):
            LakeLocation.parse(bad)


def test_wrong_credentials_are_one_line_without_the_secret(s3_server, monkeypatch) -> None:
    bucket = s3_server.new_bucket()
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-XYZ")
    storage = open_storage(LakeLocation.parse(f"s3://{bucket}/lake"))
    # moto accepts any key pair unless told to check; a missing bucket it always refuses.
    missing = open_storage(LakeLocation.parse("s3://no-such-bucket-here/lake"))
    with pytest.raises(StoreUnavailable) as info:
        missing.put("x", b"y")
    assert "not-the-secret-XYZ" not in str(info.value)
    assert "\n" not in str(info.value)
    storage.put("x", b"y")


def test_unreachable_endpoint_is_store_unavailable(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: refused
    storage = open_storage(
        LakeLocation.parse("s3://bucket/lake"),
        client_options={"timeout": "2s", "connect_timeout": "1s"},
        retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=2)},
    )
    with pytest.raises(StoreUnavailable):
        storage.head("x")
