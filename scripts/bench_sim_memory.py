"""The simulator's memory after serving a range: RSS of ``backfill gateway`` as clients walk it.

Starts ``backfill gateway --port 0 --no-pacing`` (no ``--log``), then one client process per
symbol, each walking its symbol day by day backwards over the years asked (1-minute
AGGTRADES, ``--window-days`` per request, as a product worker does), and prints the gateway's
RSS (VmRSS) and peak (VmHWM) from /proc before and after. Linux only.
Usage: python scripts/bench_sim_memory.py [--symbols 1] [--years 1] [--window-days 1]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import signal
import time
from datetime import datetime, timedelta, timezone

from sim_clients import connect, start_gateway


def client(slot: int, port: int, days: int, window_days: int, out: mp.Queue) -> None:
    """Walk one symbol over ``days`` days in ``window_days`` windows, newest first."""
    ib, contract = connect(slot, port)
    end = datetime(2024, 12, 31, tzinfo=timezone.utc)
    requests = bars = 0
    for _ in range(0, days, window_days):
        got = ib.reqHistoricalData(
            contract, end, f"{window_days} D", "1 min", "AGGTRADES", False, 2, timeout=60
        )
        bars += len(got)
        requests += 1
        end -= timedelta(days=window_days)
    ib.disconnect()
    out.put((requests, bars))


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB."""
    with open(f"/proc/{pid}/status") as handle:
        status = dict(line.split(":", 1) for line in handle if ":" in line)
    return (int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1)
    parser.add_argument("--years", type=float, default=1.0)
    parser.add_argument("--window-days", type=int, default=1)
    args = parser.parse_args()

    gateway, port = start_gateway()
    rss_start, _ = memory_mb(gateway.pid)
    days = round(365 * args.years)
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    started = time.time()
    procs = [
        ctx.Process(target=client, args=(i, port, days, args.window_days, out))
        for i in range(args.symbols)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=3600) for _ in procs]
    wall = time.time() - started
    for proc in procs:
        proc.join()
    rss_end, peak = memory_mb(gateway.pid)
    gateway.send_signal(signal.SIGTERM)
    gateway.wait(10)
    requests = sum(r for r, _ in results)
    bars = sum(b for _, b in results)
    print(
        f"served {args.symbols} symbol(s) x {days} days ({args.window_days}-day windows): "
        f"{requests} requests, {bars} bars in {wall:.1f} s"
    )
    print(f"gateway RSS: {rss_start:.0f} MB at start, {rss_end:.0f} MB after, peak {peak:.0f} MB")


if __name__ == "__main__":
    main()
