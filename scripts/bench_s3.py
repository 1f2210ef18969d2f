"""Benchmark the lake on S3 (moto's server on 127.0.0.1) beside the same work on a local lake.

Figures, each for both lakes, whole CLI processes timed from start to end:

- ``run``: ``--symbols`` symbols × July 2025 (31 days) against a fresh in-process simulator
  (same seed, latency and rate for both), wall time and the efficiency local/S3;
- ``plan`` over a thin lake (``--thin-symbols`` × ``--thin-months`` parts, written through
  the store): cold (no cache: every footer read; on S3 one ranged get each) and cached;
- ``verify`` of the run's lake and of the thin lake;
- requests made to the store per part written (puts, gets, heads), counted in-process over
  the thin lake's writes.

Usage: python scripts/bench_s3.py [--symbols 8] [--thin-symbols 20] [--thin-months 24]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from bench_thin_lake import months, symbols, write_symbol  # noqa: E402

from backfill.lake.objpath import lake_path  # noqa: E402
from backfill.lake.storage import ObjectStorage  # noqa: E402
from backfill.sim import FaultConfig, PacingConfig, SimConfig, SimGateway  # noqa: E402
from tests.s3server import running_s3_server  # noqa: E402

RUN_SYMBOLS = [f"{b}-USD" for b in ("BTC", "ETH", "LTC", "BCH", "SOL", "AVAX", "LINK", "DOGE")]
FAST_RULES = ("--ib-identical-s", "1.5", "--ib-contract-window-s", "0.2")


def timed(*args: str) -> float:
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
    return elapsed


def run_once(lake: str, count: int, rate: str) -> float:
    sim = SimGateway(
        SimConfig(
            port=0,
            seed=7,
            pacing=PacingConfig(soft_rate=None, max_rate=60),
            faults=FaultConfig(latency_ms=(20, 60), seed=7),
        )
    ).start()
    try:
        return timed(
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=8, choices=range(1, 9))
    parser.add_argument("--rate", default="20")
    parser.add_argument("--thin-symbols", type=int, default=20)
    parser.add_argument("--thin-months", type=int, default=24)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-s3-"))
    try:
        with running_s3_server() as server:
            os.environ.update(server.env())
            s3_run = f"s3://{server.new_bucket()}/lake"
            s3_thin = f"s3://{server.new_bucket()}/thin"
            lakes = {"local": (str(work / "run"), str(work / "thin")), "s3": (s3_run, s3_thin)}

            print(f"run: {args.symbols} symbols x 31 days at --rate {args.rate}")
            walls = {
                kind: run_once(run_lake, args.symbols, args.rate)
                for kind, (run_lake, _) in lakes.items()
            }
            for kind, wall in walls.items():
                print(f"  {kind:6} {wall:6.2f} s")
            print(f"  efficiency (local/S3) {walls['local'] / walls['s3']:.2f}")

            print("verify of the run's lake")
            for kind, (run_lake, _) in lakes.items():
                print(f"  {kind:6} {timed('verify', '--lake', run_lake):6.2f} s")

            parts = args.thin_symbols * args.thin_months
            print(f"thin lake: {parts} parts written through the store")
            calls = count_requests()
            for kind, (_, thin) in lakes.items():
                started = time.perf_counter()
                written = sum(
                    write_symbol(lake_path(thin), symbol, args.thin_months, seed)
                    for seed, symbol in enumerate(symbols(args.thin_symbols))
                )
                print(f"  {kind:6} {time.perf_counter() - started:6.2f} s ({written} parts)")
            per_part = {name: n / parts for name, n in sorted(calls.items())}
            print(
                "  S3 requests per part written: "
                + ", ".join(f"{name} {n:.2f}" for name, n in per_part.items())
            )

            first, last = months(args.thin_months)[0], months(args.thin_months)[-1]
            plan = [
                "--symbols",
                ",".join(str(s) for s in symbols(args.thin_symbols)),
                "--from",
                str(first.first_day),
                "--to",
                str(last.last_day),
                "--json",
            ]
            print("plan over the thin lake")
            for kind, (_, thin) in lakes.items():
                cold = timed("plan", "--lake", thin, *plan)  # the first plan writes the cache
                cached = min(timed("plan", "--lake", thin, *plan) for _ in range(3))
                print(f"  {kind:6} cold {cold:5.2f} s, cached {cached:5.2f} s (best of 3)")
            print("verify of the thin lake")
            for kind, (_, thin) in lakes.items():
                print(f"  {kind:6} {timed('verify', '--lake', thin):6.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
