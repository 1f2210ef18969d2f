"""``backfill run --rate auto`` against a gateway whose capacity it must find, beside fixed rates.

Each row starts a fresh ``backfill gateway --soft-rate 3 --overload disconnect --latency-ms
50-150`` (the soft throttle's capacity, 3 req/s, is what the run must discover; past it
answers queue, and a queue of 10 or slowed answers for 20 s drops the connection that adds
one more), then ``backfill run`` of 8 symbols into a fresh temp lake. Figures per row:

- throughput = requests answered with data / wall time of ``backfill run`` (process start to
  exit), and ``efficiency``, its share of the hidden capacity (aim for auto: >= 0.9);
- where the rest went: ``before_s`` (process start to the orchestrator's first event: imports,
  gateway check, heads, edges), ``after_s`` (its last event to exit), and
  ``request_phase_efficiency`` (the run's requests over the orchestrator's span);
- connections the gateway dropped for overload (aim for auto: 0), requests timed out,
  162s; the rate the run ended at; whether ``backfill verify`` passes afterwards;
- the load average (1 min) before and after: on a shared machine the figure moves with it.

``--capacity`` other than 3 moves the gateway's 162 ceiling (``--max-rate``, 5 req/s over 10 s)
to 5/3 of it when higher, as it stands at 3, so the soft throttle is what is measured.

Each row runs ``--reps`` times (default 2), then a summary line per row and capacity gives the
spread of the efficiency.

Usage: python scripts/bench_throttle.py [--days 31] [--slow-days 8] [--rows auto,0.7,3,10]
[--capacity 3[,1.5,5]] [--latency-ms 50-150] [--reps 2] [--lift-cap]
(``--slow-days``: the 0.7 row fetches fewer days, or it takes 6 minutes; said in its row.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

CAPACITY = 3.0  # the default hidden capacity (--capacity)
LATENCY_MS = "50-150"  # the default gateway latency (--latency-ms)
SYMBOLS = "BTC-USD,ETH-USD,LTC-USD,BCH-USD,SOL-USD,AVAX-USD,LINK-USD,DOGE-USD"
FIRST = date(2025, 7, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"gateway did not listen on {port}")


def backfill(*args: str) -> list[str]:
    return [sys.executable, "-m", "backfill", *args]


def bench_row(
    rate: str,
    days: int,
    work: Path,
    gateway_src: Path | None,
    extra: tuple[str, ...] = (),
    capacity: float = CAPACITY,
    rep: int = 1,
    latency_ms: str = LATENCY_MS,
) -> dict[str, Any]:
    name = f"{rate}-c{capacity:g}-r{rep}"
    lake, log = work / f"lake-{name}", work / f"gateway-{name}.jsonl"
    load_before = os.getloadavg()[0]
    port = free_port()
    gateway = subprocess.Popen(
        backfill(
            "gateway",
            "--port",
            str(port),
            "--soft-rate",
            str(capacity),
            "--max-rate",
            str(max(5.0, capacity * 5 / 3)),
            "--overload",
            "disconnect",
            "--latency-ms",
            latency_ms,
            "--log",
            str(log),
            "--symbols",
            ",".join(s.split("-")[0] for s in SYMBOLS.split(",")),
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(gateway_src)} if gateway_src else None,
    )
    try:
        wait_for_port(port)
        last = FIRST + timedelta(days=days - 1)
        started, started_at = time.perf_counter(), time.time()
        done = subprocess.run(
            backfill(
                "run",
                "--gateway",
                f"127.0.0.1:{port}",
                "--lake",
                str(lake),
                "--symbols",
                SYMBOLS,
                "--from",
                str(FIRST),
                "--to",
                str(last),
                "--rate",
                rate,
                "--json",
                *extra,
            ),
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
    finally:
        gateway.terminate()
        gateway.wait(10)
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    budgets = [e for e in events if e.get("event") == "budget"]
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    historical = [r for r in records if r.get("kind") == "historical"]
    outcomes = Counter(r.get("outcome") for r in historical)
    answered = outcomes["bars"] + outcomes["no_data"]
    verify = subprocess.run(backfill("verify", "--lake", str(lake)), capture_output=True)
    stamps = [e["at"] for e in events if isinstance(e.get("at"), (int, float))]
    requests = sum(1 for e in events if e.get("event") == "request")
    span = max(stamps) - min(stamps) if stamps else 0.0
    return {
        "rate": rate,
        "capacity": capacity,
        "rep": rep,
        "extra": " ".join(extra),
        "days": days,
        "exit": done.returncode,
        "wall_s": round(wall, 1),
        "answered": answered,
        "throughput": round(answered / wall, 3),
        "efficiency": round(answered / wall / capacity, 3),
        "before_s": round(min(stamps) - started_at, 1) if stamps else None,
        "after_s": round(started_at + wall - max(stamps), 1) if stamps else None,
        "request_phase_efficiency": round(requests / span / capacity, 3) if span else None,
        "dropped_overload": sum(1 for r in historical if r.get("outcome") == "dropped"),
        "timeouts": sum(
            1 for e in events if e.get("event") == "request" and e.get("outcome") == "timeout"
        ),
        "pacing_162": sum(1 for r in historical if r.get("error_code") == 162),
        "rate_at_end": budgets[-1]["rate"] if budgets else None,
        "budget_changes": len(budgets),
        "verify_exit": verify.returncode,
        "load_before": round(load_before, 1),
        "load_after": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=31)
    parser.add_argument("--slow-days", type=int, default=8, help="days of the 0.7 row")
    parser.add_argument("--rows", default="auto,0.7,3,10")
    parser.add_argument(
        "--capacity",
        default=str(CAPACITY),
        help="the gateway's hidden soft rate(s), req/s, comma-separated",
    )
    parser.add_argument("--reps", type=int, default=2, help="runs of each row")
    parser.add_argument(
        "--latency-ms",
        default=LATENCY_MS,
        help="the gateway's answer latency, MIN-MAX ms (users report IB's at 0.6 s and more)",
    )
    parser.add_argument("--keep", type=Path, help="keep lakes and gateway logs here")
    parser.add_argument(
        "--lift-cap",
        action="store_true",
        help="--max-in-flight-total 50: the run's in-flight cap at IB's 50",
    )
    parser.add_argument(
        "--gateway-src", type=Path, help="run the gateway from this source tree (another checkout)"
    )
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-throttle-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        extra = ("--max-in-flight-total", "50") if args.lift_cap else ()
        for capacity in (float(c) for c in args.capacity.split(",")):
            for rate in args.rows.split(","):
                days = args.slow_days if rate == "0.7" else args.days
                rows = []
                for rep in range(1, args.reps + 1):
                    rows.append(
                        bench_row(
                            rate,
                            days,
                            work,
                            args.gateway_src,
                            extra,
                            capacity,
                            rep,
                            args.latency_ms,
                        )
                    )
                    print(json.dumps(rows[-1]), flush=True)
                shares = [r["efficiency"] for r in rows]
                print(
                    json.dumps(
                        {
                            "summary": rate,
                            "capacity": capacity,
                            "latency_ms": args.latency_ms,
                            "reps": len(rows),
                            "efficiency": [min(shares), max(shares)],
                            **{
                                key: sum(r[key] for r in rows)
                                for key in ("dropped_overload", "timeouts", "pacing_162")
                            },
                            "load": [
                                min(r["load_before"] for r in rows),
                                max(r["load_after"] for r in rows),
                            ],
                        }
                    ),
                    flush=True,
                )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
