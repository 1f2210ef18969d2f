"""Requests per second the simulator serves to 8 concurrent ib_insync clients.

Starts ``backfill gateway --no-pacing`` (zero latency) as its own process, then 8 client
processes, each walking one symbol day by day as a product worker does (1-day windows,
1-minute AGGTRADES bars, so each request makes the gateway generate a fresh day).
Usage: python scripts/bench_sim.py [--clients 8] [--seconds 10]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import time
from datetime import datetime, timedelta, timezone

from sim_clients import connect, start_gateway

from backfill.ib.client import NAME


def client(slot: int, port: int, seconds: float, start_at: float, out: mp.Queue) -> None:
    """One worker-like client: sequential 1-day requests until the deadline."""
    ib, contract = connect(slot, port)
    end = datetime(2024, 12, 31, 23, 59, tzinfo=timezone.utc)
    while time.time() < start_at:
        time.sleep(0.005)
    done = bars = 0
    deadline = start_at + seconds
    while time.time() < deadline:
        got = ib.reqHistoricalData(
            contract, end, "86400 S", "1 min", "AGGTRADES", False, 2, timeout=30
        )
        bars += len(got)
        done += 1
        end -= timedelta(days=1)
    ib.disconnect()
    out.put((done, bars))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    gateway, port = start_gateway()
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start_at = time.time() + 3.0  # let every client connect before the clock starts
    procs = [
        ctx.Process(target=client, args=(i, port, args.seconds, start_at, out))
        for i in range(args.clients)
    ]
    for proc in procs:
        proc.start()
    while time.time() < start_at:
        time.sleep(0.01)
    cpu_before = cpu_seconds(gateway.pid)
    results = [out.get(timeout=args.seconds + 120) for _ in procs]
    wall = time.time() - start_at
    cpu_used = cpu_seconds(gateway.pid) - cpu_before
    for proc in procs:
        proc.join()
    gateway.send_signal(signal.SIGTERM)
    gateway.wait(10)

    requests = sum(done for done, _ in results)
    bars = sum(b for _, b in results)
    print(f"clients={args.clients} seconds={wall:.1f} requests={requests} bars={bars}")
    print(
        f"simulator: {requests / wall:.1f} requests/s to {args.clients} {NAME} clients "
        f"(1-day windows, zero latency, pacing off)"
    )
    print(
        f"simulator CPU: {cpu_used:.2f} s = {1000 * cpu_used / max(requests, 1):.2f} ms "
        f"per request, i.e. it could serve ~{requests / max(cpu_used, 1e-9):.0f} requests/s "
        f"on one core"
    )


if __name__ == "__main__":
    main()
