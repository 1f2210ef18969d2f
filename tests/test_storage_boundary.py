"""Nothing above the storage layer learns which backend a lake has (design.md, "The lake on
object storage": one storage interface sits under the store; nothing above it knows which it
has). What a folder and an object store do differently lives in the storage layer's files;
every other module calls one function there and never tests for a backend itself."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "backfill"

# The storage layer: the only files that may name a backend or test for one.
STORAGE_LAYER = {
    "lake/storage.py",  # the Storage protocol, LocalStorage, ObjectStorage
    "lake/objpath.py",  # ObjectPath, LakePath, text to a lake root
    "lake/lakeio.py",  # whole small files, logs, footers, plan's scan: one function each
    "lake/lease.py",  # run locks: a file lock or a lease
}


BACKEND_TESTS = re.compile(
    r"is_object\b"  # is_object(...), _is_object(...)
    r"|\bis_object_store\b"
    r"|\bObjectStorage\b"
    r"|\bLocalStorage\b"
    r"|isinstance\([^)]*\bObjectPath\b"  # isinstance(path, ObjectPath) and tuples of it
)


def backend_tests(source: str) -> list[tuple[int, str]]:
    """Each line of ``source`` that names a backend or tests for one."""
    return [
        (number, line.strip())
        for number, line in enumerate(source.splitlines(), 1)
        if BACKEND_TESTS.search(line)
    ]


def offenders(package: Path) -> dict[str, list[tuple[int, str]]]:
    found = {}
    for path in sorted(package.rglob("*.py")):
        name = path.relative_to(package).as_posix()
        if name in STORAGE_LAYER:
            continue
        hits = backend_tests(path.read_text(encoding="utf-8"))
        if hits:
            found[name] = hits
    return found


def test_no_module_above_the_storage_layer_tests_for_a_backend() -> None:
    found = offenders(PACKAGE)
    over = {name: hits for name, hits in found.items() if hits}
    assert not over, "backend tests above the storage layer (move them into lake/lakeio.py):\n" + (
        "\n".join(f"backfill/{name}:{n}: {line}" for name, hits in over.items() for n, line in hits)
    )


def test_the_storage_layer_files_exist() -> None:
    # A renamed storage file would silently widen what the scan lets through.
    for name in STORAGE_LAYER:
        assert (PACKAGE / name).is_file(), name


@pytest.mark.parametrize(
    "line",
    [
        "    if is_object(lake):",
        "    if isinstance(path, ObjectPath):",
        "    if not isinstance(path, (Path, ObjectPath)):",
        "    if lake.location.is_object_store:",
        "    if isinstance(storage, LocalStorage):",
        "    store = ObjectStorage(location, MemoryStore())",
    ],
)
def test_the_scan_finds_each_kind_of_backend_test(line: str, tmp_path: Path) -> None:
    package = tmp_path / "backfill"
    (package / "run").mkdir(parents=True)
    (package / "run" / "planted.py").write_text(f"def f(path, lake, storage):\n{line}\n")
    (package / "lake").mkdir()
    (package / "lake" / "lakeio.py").write_text(f"def g(path, lake, storage):\n{line}\n")
    assert offenders(package) == {"run/planted.py": [(2, line.strip())]}


def test_the_scan_lets_types_and_calls_through() -> None:
    assert not backend_tests(
        "from backfill.lake.objpath import LakePath, ObjectPath\n"
        "def f(path: LakePath) -> ObjectPath | None:\n"
        "    return write_small(path, b'')\n"
    )
