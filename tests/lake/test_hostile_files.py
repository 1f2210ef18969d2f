"""Every file the lake holds is input: each JSON file and footer record, attacked (nested
200,000 deep, a FIFO in its place, huge, wrong types, values out of range), gives no
traceback, no hang and a sane exit code, from every command that reads it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from backfill import read_bars
from backfill.domain import UTC, Month
from backfill.lake import store
from backfill.lake.coverage_index import cache_path, read_day_marks
from backfill.lake.gateway import gateway_facts_path, read_finding, read_findings
from backfill.lake.heads import heads_path, read_heads
from backfill.lake.paths import part_path, recent_sends_path
from backfill.lake.schema import COVERAGE_KEY
from backfill.lake.verify import Kind, verify_lake
from backfill.run.runlog import measured_rate
from backfill.run.sendlog import load_recent_sends
from tests.lake.conftest import BTC_DAYS
from tests.lake.helpers import BTC, day_bars

JULY = Month(2025, 7)
D1, D2, D3 = BTC_DAYS
NOW = datetime(2025, 9, 1, tzinfo=UTC)
HOST, PORT = "127.0.0.1", 4002
NESTED = "[" * 200_000 + "]" * 200_000


def _cache_key(lake: Path) -> str:
    path = part_path(lake, BTC, JULY)
    return str(path.relative_to(path.parents[3]))


def _identity(lake: Path) -> list[int]:
    st = os.stat(part_path(lake, BTC, JULY))
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


# Each file: where it is, and a document of the right shape with wrong types, and one with
# values out of range.
FILES: dict[str, Callable[[Path], Path]] = {
    "cache": cache_path,
    "heads": heads_path,
    "findings": lambda lake: gateway_facts_path(lake, HOST, PORT),
    "sends": lambda lake: recent_sends_path(lake, BTC),
}


def wrong_types(name: str, lake: Path) -> object:
    return {
        "cache": {"version": 1, "parts": {_cache_key(lake): "abc"}},
        "heads": {"heads": {"BTC-USD": {"head": 5, "asked_at": []}}},
        "findings": {
            "findings": {
                "latency_s": {"value": {"1": "x"}, "checked_at": 7},
                "window_edges": "oops",
            }
        },
        "sends": [["key", "x"], 5],
    }[name]


def out_of_range(name: str, lake: Path) -> object:
    return {
        # complete -1: every bit set, which plan would read as every day done
        "cache": {"version": 1, "parts": {_cache_key(lake): [*_identity(lake), -1, 0]}},
        "heads": {
            "heads": {"BTC-USD": {"head": "0001-01-01T00:00:00+00:00", "asked_at": "99999-01-01"}}
        },
        "findings": {
            "findings": {"latency_s": {"value": {"1": 1e300}, "checked_at": NOW.isoformat()}}
        },
        "sends": [["key", 1e300], ["key", -1e300]],
    }[name]


def plant(lake: Path, name: str, attack: str) -> None:
    path = FILES[name](lake)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    if attack == "nested":
        path.write_text(NESTED)
    elif attack == "fifo":
        os.mkfifo(path)
    elif attack == "huge":
        with open(path, "wb") as file:  # sparse: 2 GB said, nothing written
            file.truncate(2 << 30)
    elif attack == "wrong-types":
        path.write_text(json.dumps(wrong_types(name, lake)))
    else:
        path.write_text(json.dumps(out_of_range(name, lake)))


ATTACKS = ["nested", "fifo", "huge", "wrong-types", "out-of-range"]


def readers(lake: Path) -> None:
    """Every in-process reader of the four files."""
    # The footers decide: the cache never marks July's other days done.
    assert set(read_day_marks(lake, [BTC], D1, JULY.last_day)[BTC]) == {D1, D2, D3}
    heads = read_heads(lake)
    assert all(h.head.year > 1 for h in heads.values())
    findings = read_findings(lake, HOST, PORT, NOW)
    assert (
        findings is None
        or "latency_s" not in findings.fresh
        or findings.fresh["latency_s"]["1"] == 1e300
    )  # kept as recorded, refused where used
    read_finding(lake, HOST, PORT, "window_edges", NOW)
    assert all(0 <= ago < 1e6 for _, ago in load_recent_sends(lake, BTC, NOW.timestamp()))


@pytest.mark.timeout(20)
@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("name", list(FILES))
def test_each_file_each_attack_in_process(clean_lake: Path, name: str, attack: str) -> None:
    plant(clean_lake, name, attack)
    readers(clean_lake)
    read_bars(clean_lake, "BTC-USD", D1, D3)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("attack", ["nested", "huge", "wrong-types", "out-of-range"])
def test_a_bad_cache_is_ignored_and_rewritten_pruned(clean_lake: Path, attack: str) -> None:
    plant(clean_lake, "cache", attack)
    read_day_marks(clean_lake, [BTC], D1, D3, clock=lambda: 2**62)
    parts = json.loads(cache_path(clean_lake).read_text())["parts"]
    assert list(parts) == [_cache_key(clean_lake)]
    assert parts[_cache_key(clean_lake)][4] == 0b1110  # days 1..3, from the footer


def test_the_cache_keeps_only_parts_that_exist(clean_lake: Path) -> None:
    gone = "symbol=BTC-USD/year=1999/month=01/part-1999-01.parquet"
    cache_path(clean_lake).parent.mkdir(parents=True, exist_ok=True)
    cache_path(clean_lake).write_text(
        json.dumps({"version": 1, "parts": {gone: [1, 2, 3, 4, 2, 0]}})
    )
    read_day_marks(clean_lake, [BTC], D1, D3, clock=lambda: 2**62)
    assert list(json.loads(cache_path(clean_lake).read_text())["parts"]) == [_cache_key(clean_lake)]


# ---------------------------------------------------------------- footers


def rewrite_footer(path: Path, record: bytes) -> None:
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({COVERAGE_KEY: record}), path)


def _record(path: Path, change: Callable[[dict], None]) -> bytes:
    record = json.loads(pq.read_schema(path).metadata[COVERAGE_KEY])
    change(record["days"][D1.isoformat()])
    return json.dumps(record).encode()


FOOTERS: dict[str, Callable[[Path], bytes]] = {
    "nested": lambda _: NESTED.encode(),
    "huge": lambda _: b'{"version":1,"days":{},"pad":"' + b"x" * (2 << 20) + b'"}',
    "complete-false-string": lambda p: _record(p, lambda d: d.update(complete="false")),
    "rows-negative": lambda p: _record(p, lambda d: d.update(rows=-1)),
    "rows-string": lambda p: _record(p, lambda d: d.update(rows="abc")),
    "nan": lambda _: b'{"version":1,"days":{"2025-07-01":{"rows":NaN}}}',
    "fetched-before-utc": lambda p: _record(
        p, lambda d: d.update(fetched_at="0001-01-01T00:00:00+01:00")
    ),
    "fetched-naive": lambda p: _record(p, lambda d: d.update(fetched_at="2025-07-02T00:00:00")),
    "complete-int": lambda p: _record(p, lambda d: d.update(complete=1)),
    "not-utf8": lambda _: b'{"version":1,"days":{"2025-07-01":{"rows":"\xff"}}}',
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("attack", list(FOOTERS.values()), ids=list(FOOTERS))
def test_a_bad_coverage_footer_is_a_corrupt_part(clean_lake: Path, attack) -> None:
    path = part_path(clean_lake, BTC, JULY)
    rewrite_footer(path, attack(path))
    with pytest.raises(store.CorruptPart):
        store.read_part_coverage(path)
    with pytest.raises(store.CorruptPart):
        read_bars(clean_lake, "BTC-USD", D1, D3)
    assert read_day_marks(clean_lake, [BTC], D1, D3, remember=False)[BTC] == {}
    kinds = {f.kind for f in verify_lake(clean_lake).findings}
    assert Kind.COVERAGE_MALFORMED in kinds


def test_a_nested_provenance_footer_is_untrusted(tmp_path: Path) -> None:
    from backfill.aggregate.build import read_provenance
    from backfill.aggregate.provenance import Provenance
    from backfill.lake.schema import AGGREGATE_SCHEMA, PROVENANCE_KEY

    with pytest.raises(ValueError):
        Provenance.decode(NESTED.encode())
    path = tmp_path / "part.parquet"
    pq.write_table(
        AGGREGATE_SCHEMA.empty_table().replace_schema_metadata({PROVENANCE_KEY: NESTED.encode()}),
        path,
    )
    assert "malformed provenance" in str(read_provenance(path))


# ---------------------------------------------------------------- the CLI, each attack


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backfill", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("attack", ATTACKS)
def test_plan_verify_aggregate_survive_every_file_attacked(clean_lake: Path, attack: str) -> None:
    for name in FILES:
        plant(clean_lake, name, attack)
    runs = clean_lake / "_runs"
    runs.mkdir(exist_ok=True)
    (runs / "20250901T000000Z.jsonl").write_text(
        NESTED + "\n" + '{"event":"budget","at":1,"rate":-5,"reason":"auto start"}\n'
        '{"event":"budget","at":100,"rate":NaN,"reason":"auto"}\n'
    )
    os.mkfifo(runs / "20250902T000000Z.jsonl")
    lake = str(clean_lake)
    span = ("--symbols", "BTC-USD", "--from", "2025-07-01", "--to", "2025-07-03")
    for args in (
        ("plan", "--lake", lake, *span, "--gateway", f"{HOST}:{PORT}"),
        ("plan", "--lake", lake, *span, "--gateway", f"{HOST}:{PORT}", "--rate", "auto"),
        ("verify", "--lake", lake, *span),
        ("aggregate", "--lake", lake, *span, "--tf", "H1"),
    ):
        done = cli(*args)
        assert "Traceback" not in done.stderr, (args, done.stderr[-2000:])
        assert done.returncode in (0, 1, 2), (args, done.returncode, done.stderr[-500:])
    assert measured_rate(clean_lake) is None


def test_a_run_log_rate_at_or_below_zero_is_ignored(tmp_path: Path) -> None:
    runs = tmp_path / "_runs"
    runs.mkdir()
    lines = [
        {"event": "budget", "at": 0.0, "rate": 2.0, "reason": "auto start"},
        {"event": "budget", "at": 30.0, "rate": 0.0, "reason": "auto"},
        {"event": "budget", "at": 60.0, "rate": -3.0, "reason": "auto"},
        {"event": "done", "at": 120.0},
    ]
    compact = (json.dumps(line, separators=(",", ":")) for line in lines)
    (runs / "r.jsonl").write_text("".join(f"{line}\n" for line in compact))
    measured = measured_rate(tmp_path)
    assert measured is not None and measured.rate == pytest.approx(2.0)


@pytest.mark.timeout(120)
def test_commands_survive_a_nested_coverage_footer(clean_lake: Path) -> None:
    path = part_path(clean_lake, BTC, JULY)
    rewrite_footer(path, NESTED.encode())
    lake = str(clean_lake)
    span = ("--symbols", "BTC-USD", "--from", "2025-07-01", "--to", "2025-07-03")
    for args in (
        ("plan", "--lake", lake, *span),
        ("verify", "--lake", lake, *span),
        ("aggregate", "--lake", lake, *span, "--tf", "H1"),
    ):
        done = cli(*args)
        assert "Traceback" not in done.stderr, (args, done.stderr[-2000:])
        assert done.returncode in (0, 1, 2), (args, done.returncode, done.stderr[-500:])


def _patch_footer(path: Path, old: bytes, new: bytes) -> None:
    """Swap bytes inside the footer for as many others (Thrift strings carry their length;
    a footer has no checksum): the file stays a Parquet file pyarrow opens."""
    data = path.read_bytes()
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    at = data.index(old, start)
    assert len(new) == len(old)
    path.write_bytes(data[:at] + new + data[at + len(old) :])


@pytest.mark.timeout(120)
def test_a_footer_whose_column_name_is_not_utf8_is_a_corrupt_part(clean_lake: Path) -> None:
    path = part_path(clean_lake, BTC, JULY)
    _patch_footer(path, b"symbol", b"symb\xffl")  # the first is the Parquet schema's column
    with pytest.raises(store.CorruptPart):
        store.read_part_coverage(path)
    with pytest.raises(store.CorruptPart):
        read_bars(clean_lake, "BTC-USD", D1, D3)
    assert read_day_marks(clean_lake, [BTC], D1, D3, remember=False)[BTC] == {}
    assert Kind.UNREADABLE in {f.kind for f in verify_lake(clean_lake).findings}
    lake = str(clean_lake)
    span = ("--symbols", "BTC-USD", "--from", "2025-07-01", "--to", "2025-07-03")
    for args in (
        ("verify", "--lake", lake, *span),
        ("aggregate", "--lake", lake, *span, "--tf", "H1"),
        ("levels", "--lake", lake, *span),
    ):
        done = cli(*args)
        assert "Traceback" not in done.stderr, (args, done.stderr[-2000:])
        assert done.returncode in (0, 1), (args, done.returncode, done.stderr[-500:])
    damaged = path.read_bytes()
    [write] = store.write_batch(clean_lake, BTC, day_bars(BTC, D1), [D1], fetched_at=NOW)
    assert write.quarantined is not None  # run moves it aside, as any corrupt part
    assert write.quarantined.read_bytes() == damaged
    assert list(store.read_part_coverage(path)) == [D1]


@pytest.mark.timeout(30, method="thread")  # a hang is in C (pyarrow's open): no signal reaches it
def test_a_fifo_in_a_parts_place_blocks_nobody(clean_lake: Path) -> None:
    path = part_path(clean_lake, BTC, JULY)
    path.unlink()
    os.mkfifo(path)
    assert read_day_marks(clean_lake, [BTC], D1, D3)[BTC] == {}
    assert read_day_marks(clean_lake, [BTC], D1, D3, remember=False)[BTC] == {}
    with pytest.raises(store.CorruptPart):
        store.read_part_coverage(path)
    with pytest.raises(store.PartUnreadable):
        store.write_batch(clean_lake, BTC, day_bars(BTC, D1), [D1], fetched_at=NOW)
    assert path.exists()  # not read, so not judged: left where it is
    assert Kind.UNREADABLE in {f.kind for f in verify_lake(clean_lake).findings}
