"""What learning the window edges costs at start-up, and requests per day of data.

Runs the real CLI against the simulator (30-150 ms latency, as --gateway sim) over 28 days
of BTC-USD: learning cost per edge rule, then requests per day for --window-days 1 and 7
under --day-duration calendar and sessions, then per --header-format (New York login zone)
the cost of learning the header's clock (from the same two requests) and the requests per
day with --window-days 7, a lying header (shifted an hour: untrusted) last.
Usage: python scripts/bench_edges.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from backfill.ib.edges import SPAN, SURVEY
from backfill.ib.served import FORMATS
from backfill.sim import FAST_PACING, Behaviour, FaultConfig, SimConfig, SimGateway

FIRST, LAST, DAYS = "2025-06-02", "2025-06-29", 28
LEARNING = {f"{int(SURVEY.total_seconds())} S", f"{int(SPAN.total_seconds())} S"}


def run(gateway: SimGateway, lake: Path, *extra: str) -> tuple[str, float]:
    """The run's "Window edges" and "Served-window header" lines, and its seconds."""
    began = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "backfill",
            "run",
            "--gateway",
            f"{gateway.host}:{gateway.port}",
            "--lake",
            str(lake),
            "--symbols",
            "BTC-USD",
            "--from",
            FIRST,
            "--to",
            LAST,
            "--rate",
            "50",
            "--ib-identical-s",
            "1.5",
            "--ib-contract-window-s",
            "0.2",
            *extra,
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    said = [
        text
        for text in done.stdout.splitlines()
        if text.startswith(("Window edges", "Served-window header"))
    ]
    return "\n".join(said), time.monotonic() - began


def sim(timezone: str = "UTC", **behaviour: object) -> SimGateway:
    return SimGateway(
        SimConfig(
            port=0,
            pacing=FAST_PACING,
            keep_requests=True,
            behaviour=Behaviour(**behaviour),
            timezone=timezone,
            faults=FaultConfig(latency_ms=(30, 150)),
        )
    ).start()


def main() -> None:
    print("learning the edges (latency 30-150 ms):")
    for edges in ("[)", "(]", "[]", "()"):
        with sim(window_edges=edges) as gateway, tempfile.TemporaryDirectory() as tmp:
            lines, _ = run(gateway, Path(tmp) / "lake", "--window-days", "7")
            learned = [r for r in gateway.requests() if r.duration in LEARNING]
            print(f"  {edges}: {len(learned)} requests; {lines.splitlines()[0].strip()}")
    print(f"requests per day of data ({DAYS} days):")
    for duration, zone in (
        ("calendar", "UTC"),
        ("sessions", "UTC"),
        ("sessions", "America/New_York"),
    ):
        for window_days in (1, 7):
            with sim(zone, day_duration=duration) as gateway, tempfile.TemporaryDirectory() as tmp:
                _, seconds = run(gateway, Path(tmp) / "lake", "--window-days", str(window_days))
                asked = [
                    r
                    for r in gateway.requests()
                    if r.kind == "historical" and r.duration not in LEARNING
                ]
                print(
                    f"  --day-duration {duration:8} --timezone {zone:16} "
                    f"--window-days {window_days}: "
                    f"{len(asked)} requests, {len(asked) / DAYS:.3f} per day, {seconds:.1f}s"
                )

    print("the served-window header, per --header-format (New York login zone, --window-days 7):")
    for form, shift in [(f, 0) for f in FORMATS] + [("named", 3600)]:
        with (
            sim("America/New_York", header_format=form, header_shift_s=shift) as gateway,
            tempfile.TemporaryDirectory() as tmp,
        ):
            lines, _ = run(gateway, Path(tmp) / "lake", "--window-days", "7")
            edges_line, clock_line = lines.splitlines()
            learned = [r for r in gateway.requests() if r.duration in LEARNING]
            asked = [
                r
                for r in gateway.requests()
                if r.kind == "historical" and r.duration not in LEARNING
            ]
            took = edges_line.split("requests, ")[1].split("s")[0]
            name = f"{form}{' shifted 1 h' if shift else ''}"
            print(
                f"  {name:18} learning: {len(learned)} requests, {took} s (the clock: "
                f"no extra request); {len(asked) / DAYS:.3f} requests per day; "
                f"header {_reading(clock_line)}"
            )


def _reading(clock_line: str) -> str:
    if "untrusted" in clock_line:
        return "untrusted"
    if "read in UTC" in clock_line:
        return "zone-less, read in UTC"
    if "login zone" in clock_line:
        return "zone-less, read in the login zone"
    return "read as written"


if __name__ == "__main__":
    main()
