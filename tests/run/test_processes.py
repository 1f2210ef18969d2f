"""Where workers come from: a forkserver that loaded and warmed their code, running nicer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from backfill.settings import RunSettings
from backfill.sim import FaultConfig
from tests.run.conftest import run_args

FIRST_WRITE = textwrap.dedent(
    """
    import sys
    from datetime import datetime, timedelta, timezone
    from pathlib import Path

    from backfill.run.processes import PRELOAD

    for name in PRELOAD:  # what the forkserver imports before it forks a worker
        __import__(name)

    import pyarrow as pa

    from backfill.domain import Symbol, days_between
    from backfill.lake.store import write_batch

    days = days_between(datetime(2025, 7, 1).date(), datetime(2025, 7, 31).date())
    start = datetime(2025, 7, 1, tzinfo=timezone.utc)  # bar ends, day by day
    ts = [start + timedelta(minutes=m) for m in range(31 * 1440)]
    n = len(ts)
    bars = pa.table(
        {
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            **{c: pa.array([1.0] * n) for c in ("open", "high", "low", "close", "volume")},
            "source": ["ibkr"] * n, "market": ["crypto"] * n, "symbol": ["ETH-USD"] * n,
            "exchange": ["PAXOS"] * n, "what_to_show": ["AGGTRADES"] * n,
            "wap": pa.array([1.0] * n), "bar_count": pa.array([1] * n, pa.int64()),
        }
    )
    before = set(sys.modules)
    write_batch(Path(sys.argv[1]), Symbol("ETH", "USD"), bars, days,
                fetched_at=datetime(2025, 8, 2, tzinfo=timezone.utc))
    print(sorted(set(sys.modules) - before))
    """
)


def test_a_workers_first_part_write_imports_nothing(tmp_path):
    # Measured: filelock's import on the first write cost a worker ~0.3 s, and all eight
    # paid it at the same month boundary: their sends stopped for over a second.
    done = subprocess.run(
        [sys.executable, "-c", FIRST_WRITE, str(tmp_path / "lake")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", f"imported on the first write: {done.stdout.strip()}"


@pytest.mark.e2e
@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="no niceness on this OS")
@pytest.mark.parametrize("flag", [None, "0", "2"])
def test_workers_run_nicer_than_the_run(sim, lake, flag):
    # Their part writes must not starve a gateway on the same host, which would then read
    # their requests late and bunched. Read while the worker runs: its pid is in the run's
    # "started" event; the answers take 0.2 s, so it lives for seconds.
    sim.set_faults(FaultConfig(latency_ms=(200, 200)))
    worker_niceness = RunSettings().worker_niceness if flag is None else int(flag)
    assert flag is not None or worker_niceness > 0
    extra = () if flag is None else ("--worker-niceness", flag)
    args = run_args(
        sim, lake, ["BTC-USD"], "2025-07-01", "2025-07-08", "--json", "--rate", "50", *extra
    )
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL) as run:
        assert run.stdout is not None
        seen = None
        for line in run.stdout:
            event = json.loads(line)
            if event["event"] == "started":
                seen = os.getpriority(os.PRIO_PROCESS, event["pid"])
                break
        run_niceness = os.getpriority(os.PRIO_PROCESS, run.pid)
        run.stdout.read()
    assert run.returncode == 0
    assert seen == run_niceness + worker_niceness
