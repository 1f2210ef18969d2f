"""What learning the window edges costs at start-up, and requests per day of data.

Runs the real CLI against the simulator (30-150 ms latency, as --gateway sim) over 28 days
of BTC-USD: learning cost per edge rule, then requests per day for --window-days 1 and 7
under --day-duration calendar and sessions. Usage: python scripts/bench_edges.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backfill.ib.edges import SPAN, SURVEY
from backfill.sim import FAST_PACING, Behaviour, FaultConfig, SimConfig, SimGateway

FIRST, LAST, DAYS = "2025-06-02", "2025-06-29", 28
LEARNING = {f"{int(SURVEY.total_seconds())} S", f"{int(SPAN.total_seconds())} S"}


def run(gateway: SimGateway, lake: Path, *extra: str) -> tuple[str, float]:
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "backfill", "run", "--gateway", f"{gateway.host}:{gateway.port}",
         "--lake", str(lake), "--symbols", "BTC-USD", "--from", FIRST, "--to", LAST,
         "--rate", "50", "--ib-identical-s", "1.5", "--ib-contract-window-s", "0.2", *extra],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    first_line = next(line for line in done.stdout.splitlines() if "Window edges" in line)
    return first_line, time.monotonic() - began


def sim(timezone: str = "UTC", **behaviour: object) -> SimGateway:
    return SimGateway(SimConfig(
        port=0, pacing=FAST_PACING, keep_requests=True, behaviour=Behaviour(**behaviour),
        timezone=timezone,
        faults=FaultConfig(latency_ms=(30, 150)),
    )).start()


def main() -> None:
    print("learning the edges (latency 30-150 ms):")
    for edges in ("[)", "(]", "[]", "()"):
        with sim(window_edges=edges) as gateway, tempfile.TemporaryDirectory() as tmp:
            line, _ = run(gateway, Path(tmp) / "lake", "--window-days", "7")
            learned = [r for r in gateway.requests() if r.duration in LEARNING]
            print(f"  {edges}: {len(learned)} requests; {line.strip()}")
    print(f"requests per day of data ({DAYS} days):")
    for duration, zone in (("calendar", "UTC"), ("sessions", "UTC"),
                           ("sessions", "America/New_York")):
        for window_days in (1, 7):
            with sim(zone, day_duration=duration) as gateway, \
                    tempfile.TemporaryDirectory() as tmp:
                _, seconds = run(gateway, Path(tmp) / "lake", "--window-days", str(window_days))
                asked = [r for r in gateway.requests()
                         if r.kind == "historical" and r.duration not in LEARNING]
                print(f"  --day-duration {duration:8} --timezone {zone:16} "
                      f"--window-days {window_days}: "
                      f"{len(asked)} requests, {len(asked) / DAYS:.3f} per day, {seconds:.1f}s")


if __name__ == "__main__":
    main()
