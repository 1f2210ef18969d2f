"""``verify`` walks the lake through the storage layer, blind to its backend: the same tree in
a folder and in an object store gives the same findings, and the store is listed once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill.lake.objpath import ObjectPath, lake_path, storage_of, walk_lake_files
from backfill.lake.paths import dataset_root, part_path, relative, symbol_dir, temp_path
from backfill.lake.verify import Kind, VerifyReport, verify_lake
from tests.lake.helpers import BTC, ETH
from tests.s3server import S3Server, running_s3_server

pytest.importorskip("obstore")
pytest.importorskip("moto")

JULY, AUGUST = (2025, 7), (2025, 8)


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with running_s3_server() as server:
        yield server


@pytest.fixture
def s3_root(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> ObjectPath:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    root = lake_path(f"s3://{s3_server.new_bucket()}/team/lake")
    assert isinstance(root, ObjectPath)
    return root


def spoiled(lake: Path) -> Path:
    """The clean lake with a file of every kind the walk must tell apart."""
    from backfill.domain import Month

    btc = part_path(lake, BTC, Month(*JULY))
    extra = {
        btc.parent / "_old" / btc.name: btc.read_bytes(),  # DuckDB reads it: a stray
        dataset_root(lake) / "loose.parquet": btc.read_bytes(),  # outside every symbol
        temp_path(btc): b"half",  # an interrupted write
        btc.with_name(f"_corrupt-{btc.name}.20250801T000000000000Z.bad"): b"junk",
        part_path(lake, ETH, Month(*AUGUST)): b"not parquet",  # unreadable
    }
    for path, data in extra.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return lake


def upload(lake: Path, root: ObjectPath) -> None:
    for path in sorted(p for p in lake.rglob("*") if p.is_file()):
        (root / path.relative_to(lake).as_posix()).write_bytes(path.read_bytes())


def seen(report: VerifyReport) -> set[tuple[Any, ...]]:
    """The findings, their paths relative to the lake (the details name the backend's error)."""
    return {(f.severity, f.kind, f.symbol, report.relative(f.path), f.day) for f in report.findings}


class CountedCalls:
    """The store's client module, each call counted by name (one call: one request, or one
    paged listing)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.real, name)
        if not callable(attribute):
            return attribute

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attribute(*args, **kwargs)

        return counted


def test_the_same_tree_in_a_folder_and_a_store_verifies_alike_with_one_listing(
    clean_lake: Path, s3_root: ObjectPath, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = spoiled(clean_lake)
    upload(lake, s3_root)
    local = verify_lake(lake)
    store = storage_of(s3_root.location)
    counted = CountedCalls(store._obs)
    monkeypatch.setattr(store, "_obs", counted)
    remote = verify_lake(s3_root)
    assert seen(remote) == seen(local)
    walked = (Kind.STRAY_FILE, Kind.STALE_TEMP, Kind.QUARANTINED, Kind.UNREADABLE)
    kinds = Counter(f.kind for f in local.findings if f.kind in walked)
    assert kinds == {
        Kind.STRAY_FILE: 2,
        Kind.STALE_TEMP: 1,
        Kind.QUARANTINED: 1,
        Kind.UNREADABLE: 1,
    }
    assert (remote.symbols, remote.parts) == (local.symbols, local.parts)
    # One listing of the lake, then a get per file read: the walk asks no folder of its own.
    assert counted.calls["list"] == 1, counted.calls
    assert counted.calls["list_with_delimiter"] == 0, counted.calls


def test_the_walk_yields_every_file_but_those_below_a_skipped_folder(
    clean_lake: Path, s3_root: ObjectPath
) -> None:
    lake = spoiled(clean_lake)
    upload(lake, s3_root)
    files = {p.relative_to(lake).as_posix() for p in dataset_root(lake).rglob("*") if p.is_file()}
    for root in (lake, s3_root):
        btc = f"{relative(root, symbol_dir(root, BTC))}/"
        every = [relative(root, p) for p in walk_lake_files(dataset_root(root))]
        kept = [
            relative(root, p) for p in walk_lake_files(dataset_root(root), {symbol_dir(root, BTC)})
        ]
        assert sorted(every) == sorted(files)  # hidden names too, each once
        assert kept == [p for p in every if not str(p).startswith(btc)]
        assert 0 < len(kept) < len(every)
