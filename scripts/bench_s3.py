"""Benchmark the lake on S3 (moto's server on 127.0.0.1) beside the same work on a local lake.

Figures, each for both lakes, whole CLI processes timed from start to end:

- ``run``: ``--symbols`` symbols × July 2025 (31 days) against a fresh in-process simulator
  (same seed, latency and rate for both), wall time and the efficiency local/S3;
- ``verify`` of the run's lake;
- requests made to the store per part written (puts, gets, heads), counted in-process while
  ``--write-symbols`` × ``--write-months`` thin parts are written through the store;
- ``plan`` over the thin lake of ``scripts/bench_thin_lake.py`` (``--thin-symbols`` ×
  ``--thin-months``, 100 × 60 = 6,000 parts): cold (no cache: every footer read; on S3 one
  ranged get each) and cached (best of 3);
- ``verify`` of the M1 lake of ``scripts/bench_aggregate.py`` (``--verify-symbols`` ×
  ``--verify-months``, 20 × 12, about 10 M rows).

The two big lakes are built once locally (cached in the temp folder, as their own scripts
do) and uploaded to the S3 server object by object, same bytes. ``--smoke`` sets every
scale small (a check that the script works, in about a minute). The machine's load
(``uptime``) is printed at the start and the end.

Usage: python scripts/bench_s3.py [--smoke] [--symbols 8] [--rate 20] [--write-symbols 20]
[--write-months 24] [--thin-symbols 100] [--thin-months 60] [--verify-symbols 20]
[--verify-months 12]
moto is a Python server: its figures bound a real store's from above for small objects
(its per-request cost is a few ms on this machine), not from below.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from bench_aggregate import build_m1_lake  # noqa: E402
from bench_thin_lake import build_lake, months, symbols, write_symbol  # noqa: E402

from backfill.lake.objpath import lake_path  # noqa: E402
from backfill.lake.paths import symbol_dir  # noqa: E402
from backfill.lake.storage import ObjectStorage  # noqa: E402
from backfill.sim import FaultConfig, PacingConfig, SimConfig, SimGateway  # noqa: E402
from tests.s3server import running_s3_server  # noqa: E402

RUN_SYMBOLS = [f"{b}-USD" for b in ("BTC", "ETH", "LTC", "BCH", "SOL", "AVAX", "LINK", "DOGE")]
FAST_RULES = ("--ib-identical-s", "1.5", "--ib-contract-window-s", "0.2")


def timed(*args: str) -> float:
    return timed_output(*args)[0]


def timed_output(*args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "backfill", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    elapsed = time.perf_counter() - started
    if done.returncode not in (0, 1):
        raise SystemExit(f"backfill {args[0]} failed ({done.returncode}): {done.stderr[-400:]}")
    return elapsed, done.stdout


def run_once(lake: str, count: int, rate: str, *extra: str) -> tuple[float, str]:
    sim = SimGateway(
        SimConfig(
            port=0,
            seed=7,
            pacing=PacingConfig(soft_rate=None, max_rate=60),
            faults=FaultConfig(latency_ms=(20, 60), seed=7),
        )
    ).start()
    try:
        return timed_output(
            "run",
            "--gateway",
            f"{sim.host}:{sim.port}",
            "--lake",
            lake,
            "--symbols",
            ",".join(RUN_SYMBOLS[:count]),
            "--from",
            "2025-07-01",
            "--to",
            "2025-07-31",
            "--rate",
            rate,
            *FAST_RULES,
            *extra,
        )
    finally:
        sim.stop()


def count_requests() -> Counter:
    """Every ObjectStorage call from now on, by name."""
    calls: Counter = Counter()
    for name in ("put", "get", "head", "list", "delete"):
        real = getattr(ObjectStorage, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):  # type: ignore[no-untyped-def]
            calls[_name] += 1
            return _real(self, *args, **kwargs)

        setattr(ObjectStorage, name, counted)
    return calls


def recorded(text: str) -> Iterator[dict]:
    """moto's recording: JSON objects, each followed by a newline written apart from it, so
    concurrent requests can put two objects on one line: decoded one object at a time."""
    import json

    decoder, at = json.JSONDecoder(), 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return
        entry, at = decoder.raw_decode(text, at)
        yield entry


def recorded_run(server_endpoint: str, lake: str, count: int, rate: str, log: Path) -> None:
    """The same run again on a fresh S3 lake with moto recording every request it serves
    (a separate, untimed run: recording costs time): requests per part written."""
    import urllib.request

    def recorder(action: str) -> None:
        url = f"{server_endpoint}/moto-api/recorder/{action}"
        urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=30).read()

    recorder("reset-recording")
    recorder("start-recording")
    try:
        _, out = run_once(lake, count, rate, "--json")
    finally:
        recorder("stop-recording")
    written = sum('"part_written"' in line for line in out.splitlines())
    kinds: Counter = Counter()
    for entry in recorded(log.read_text()):
        path = entry["url"].split("?", 1)[0]
        query = entry["url"].partition("?")[2]
        what = "part" if path.endswith(".parquet") and "/data/" in path else "other"
        if entry["method"] == "GET" and ("list-type" in query or "delimiter" in query):
            what = "listing"
        kinds[f"{entry['method']} {what}"] += 1
    print(f"  recorded S3 run: {written} part_written events; requests the store served:")
    print("    " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    puts = kinds["PUT part"]
    print(f"    data puts per part written: {puts / max(written, 1):.2f} (goal: 1)")


def print_verify(lakes: dict[str, str]) -> None:
    """``verify`` of each lake, best of 2, interleaved (one load spike hits both)."""
    best = {kind: float("inf") for kind in lakes}
    for _ in range(2):
        for kind, lake in lakes.items():
            best[kind] = min(best[kind], timed("verify", "--lake", lake))
    for kind, wall in best.items():
        print(f"  {kind:6} {wall:6.2f} s")
    print(f"  S3/local {best['s3'] / best['local']:.2f}x")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def upload(local: Path, lake: str) -> int:
    """Every part below ``local``'s ``data/`` put to the S3 lake as it is (same bytes, same
    keys): the big lakes are built once locally, not written again through the store."""
    import obstore

    store = lake_path(lake).storage
    assert isinstance(store, ObjectStorage)
    files = sorted((local / "data").rglob("*.parquet"))

    def put(path: Path) -> None:
        obstore.put(store.store, path.relative_to(local).as_posix(), path.read_bytes())

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files))
    return len(files)


def bare_listing(lake: str, count: int) -> float:
    """The store's floor under a cached plan: one listing per symbol prefix, 16 at once (as
    plan asks them), with nothing done with the answers; the best of 3, in seconds."""
    root = lake_path(lake)

    def listed(symbol: str) -> int:
        return sum(1 for _ in symbol_dir(root, symbol).walk_files())

    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            keys = sum(pool.map(listed, symbols(count)))
        best = min(best, time.perf_counter() - started)
    print(f"  the store's listing alone: {keys} keys in {best:.2f} s (best of 3)")
    return best


def plan_args(count: int, month_count: int, listing: Path) -> list[str]:
    listing.write_text("".join(f"{s}\n" for s in symbols(count)))
    chosen = months(month_count)
    return [
        "--symbols-file",
        str(listing),
        "--from",
        str(chosen[0].first_day),
        "--to",
        str(chosen[-1].last_day),
        "--json",
    ]


SMOKE = {
    "symbols": 2,
    "write_symbols": 2,
    "write_months": 3,
    "thin_symbols": 10,
    "thin_months": 6,
    "verify_symbols": 2,
    "verify_months": 2,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every scale small")
    parser.add_argument("--symbols", type=int, default=8, choices=range(1, 9))
    parser.add_argument("--rate", default="20")
    parser.add_argument(
        "--no-record", dest="record", action="store_false", help="skip the recorded S3 run"
    )
    parser.add_argument("--write-symbols", type=int, default=20)
    parser.add_argument("--write-months", type=int, default=24)
    parser.add_argument("--thin-symbols", type=int, default=100)
    parser.add_argument("--thin-months", type=int, default=60)
    parser.add_argument("--verify-symbols", type=int, default=20)
    parser.add_argument("--verify-months", type=int, default=12)
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    cache = Path(tempfile.gettempdir())
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    print(f"load at start: {uptime()}")
    # moto reads where to record when it is imported, which running_s3_server does.
    recording = work / "recording.jsonl"
    os.environ["MOTO_RECORDER_FILEPATH"] = str(recording)
    try:
        # The big local lakes first (cached, as their own scripts keep them).
        thin_local = cache / f"backfill-bench-thin-{args.thin_symbols}x{args.thin_months}"
        build_lake(thin_local, args.thin_symbols, args.thin_months)
        m1_local = cache / "backfill-bench-s3" / f"m1-{args.verify_symbols}x{args.verify_months}"
        build_m1_lake(m1_local, args.verify_symbols, args.verify_months)
        with running_s3_server() as server:
            os.environ.update(server.env())
            s3 = {
                name: f"s3://{server.new_bucket()}/{name}"
                for name in ("run", "rec", "w", "thin", "m1")
            }
            run_lakes = {"local": str(work / "run"), "s3": s3["run"]}

            print(f"run: {args.symbols} symbols x 31 days at --rate {args.rate}")
            walls = {
                kind: run_once(lake, args.symbols, args.rate)[0] for kind, lake in run_lakes.items()
            }
            for kind, wall in walls.items():
                print(f"  {kind:6} {wall:6.2f} s")
            print(f"  S3/local {walls['s3'] / walls['local']:.2f}x (goal: within 1.1x)")
            if args.record:
                recorded_run(server.endpoint, s3["rec"], args.symbols, args.rate, recording)
            print("verify of the run's lake (best of 2, interleaved)")
            print_verify(run_lakes)

            parts = args.write_symbols * args.write_months
            print(f"{parts} thin parts written through the store (in this process)")
            write_lakes = {"local": str(work / "written"), "s3": s3["w"]}
            calls = count_requests()
            for kind, lake in write_lakes.items():
                started = time.perf_counter()
                written = sum(
                    write_symbol(lake_path(lake), symbol, args.write_months, seed)
                    for seed, symbol in enumerate(symbols(args.write_symbols))
                )
                print(f"  {kind:6} {time.perf_counter() - started:6.2f} s ({written} parts)")
            per_part = {name: n / parts for name, n in sorted(calls.items())}
            print(
                "  S3 requests per part written: "
                + ", ".join(f"{name} {n:.2f}" for name, n in per_part.items())
                + " (goal: one put per part per flush)"
            )

            started = time.perf_counter()
            uploaded = upload(thin_local, s3["thin"])
            print(f"thin lake: {uploaded} parts ({time.perf_counter() - started:.0f} s upload)")
            plan = plan_args(args.thin_symbols, args.thin_months, work / "symbols.txt")
            print("plan over the thin lake")
            plans = {}
            for kind, lake in {"local": str(thin_local), "s3": s3["thin"]}.items():
                if kind == "local":  # the local lake is cached between runs: so is its cache
                    shutil.rmtree(thin_local / "_cache", ignore_errors=True)
                cold = timed("plan", "--lake", lake, *plan)  # the first plan writes the cache
                cached = min(timed("plan", "--lake", lake, *plan) for _ in range(3))
                plans[kind] = cached
                print(f"  {kind:6} cold {cold:6.2f} s, cached {cached:5.2f} s (best of 3)")
            print(f"  cached S3/local {plans['s3'] / plans['local']:.2f}x (goal: within 1.5x)")
            floor = bare_listing(s3["thin"], args.thin_symbols)
            print(
                f"  cached plan on S3 beyond the store's listing: {plans['s3'] - floor:.2f} s "
                f"({max(plans['s3'] - floor, 0) / plans['local']:.2f}x local's whole cached plan)"
            )

            started = time.perf_counter()
            uploaded = upload(m1_local, s3["m1"])
            print(
                f"verify of the {args.verify_symbols} x {args.verify_months} months M1 lake: "
                f"{uploaded} parts ({time.perf_counter() - started:.0f} s upload; best of 2)"
            )
            print_verify({"local": str(m1_local), "s3": s3["m1"]})
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print(f"load at end: {uptime()}")


if __name__ == "__main__":
    main()
