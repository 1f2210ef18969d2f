"""``backfill gateway --parent-pid``: the simulator child ends when its parent dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from backfill.ib.client import new_ib
from backfill.sim.lifeline import Lifeline, lifeline_args
from tests.sim.helpers import DAY_END, crypto

pytestmark = pytest.mark.ib  # exercises the IB client: run under both (.ci/run)

# A parent as ``backfill run --gateway sim`` is one: it starts the gateway, reports the
# gateway's pid and port, then carries on until it is killed. The first starts it with the
# simulator's lifeline alone, the second as the run does (the lifeline and a PDEATHSIG belt).
LIFELINE_ONLY = textwrap.dedent("""
    import re, subprocess, sys, time
    from backfill.sim.lifeline import lifeline_args
    child = subprocess.Popen(
        [sys.executable, "-m", "backfill", "gateway", "--port", "0", *lifeline_args()],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    port = re.search(r":(\\d+)$", child.stdout.readline().strip()).group(1)
    print(child.pid, port, flush=True)
    time.sleep(600)
""")
AS_THE_RUN_DOES = textwrap.dedent("""
    import time
    from backfill.sim.embedded import EmbeddedGateway
    with EmbeddedGateway() as running:
        print(running.process.pid, running.port, flush=True)
        time.sleep(600)
""")


def gone(pid: int) -> bool:
    """No such process, or a zombie that only waits for a reaper."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize(
    "parent_code", [LIFELINE_ONLY, AS_THE_RUN_DOES], ids=["lifeline", "embedded"]
)
def test_gateway_ends_when_its_parent_is_killed(parent_code: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    child_pid, port = map(int, parent.stdout.readline().split())
    try:
        ib = new_ib()  # serving while its parent lives
        ib.connect("127.0.0.1", port, clientId=1, timeout=5)
        assert ib.reqHistoricalData(crypto(), DAY_END, "3600 S", "1 min", "AGGTRADES", False, 2)
        ib.disconnect()
        assert not gone(child_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while not gone(child_pid):
            assert time.monotonic() < deadline, "the gateway outlived its parent"
            time.sleep(0.05)
    finally:
        if not gone(child_pid):
            os.kill(child_pid, signal.SIGKILL)


def test_lifeline_to_a_process_that_exits() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    line = Lifeline.to(proc.pid)
    assert line.alive() and not line.was_parent
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(5)  # reaped: the pid no longer exists
    assert not line.alive()
    assert lifeline_args(proc.pid) == ["--parent-pid", str(proc.pid)]
