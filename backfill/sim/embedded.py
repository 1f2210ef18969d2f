"""The simulator as a child process (``backfill gateway --port 0``), for ``--gateway sim``.

``serving`` yields where to connect: the embedded simulator's address when the gateway is
``sim``, else the address given.
"""

from __future__ import annotations

import contextlib
import re
import select
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from backfill.settings import GatewayAddress
from backfill.sim.lifeline import lifeline_args

_READY = re.compile(r"listening on (\S+):(\d+)")
# The embedded simulator keeps IB's per-contract rules but not the soft throttle IB applies
# to a whole session, so a demo can show a high --rate; latency makes it look like IB.
EMBEDDED_SIM_ARGS = ("--soft-rate", "0", "--max-rate", "0", "--latency-ms", "30-150")
EMBEDDED_START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class GatewayProcess:
    host: str
    port: int
    process: subprocess.Popen[str]


class EmbeddedGateway:
    """``backfill gateway`` in a child process on a free port, for ``--gateway sim``."""

    def __init__(self, extra_args: Sequence[str] = (), log_path: Path | None = None) -> None:
        self.args = [sys.executable, "-m", "backfill", "gateway", "--port", "0", *extra_args]
        if log_path is not None:
            self.args += ["--log", str(log_path)]
        self.running: GatewayProcess | None = None

    def __enter__(self) -> GatewayProcess:
        # The lifeline: however this process ends (SIGKILL included), the gateway ends too.
        # No preexec_fn: it would run Python's at-fork hooks in the child, where a Ctrl-C
        # landing before exec prints a traceback.
        process = subprocess.Popen(
            [*self.args, *lifeline_args()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        assert process.stdout is not None
        # It prints its address when it listens; a gateway that never does must not hang us.
        ready, _, _ = select.select([process.stdout], [], [], EMBEDDED_START_TIMEOUT_S)
        line = (
            process.stdout.readline()
            if ready
            else f"(nothing within {EMBEDDED_START_TIMEOUT_S:g}s)"
        )
        match = _READY.search(line)
        if not match:
            process.kill()
            error = process.stderr.read() if process.stderr else ""
            raise RuntimeError(f"embedded gateway did not start: {line.strip()} {error.strip()}")
        # Keep draining its output so a chatty gateway can never block on a full pipe.
        for stream in (process.stdout, process.stderr):
            if stream is not None:  # both are pipes
                threading.Thread(target=stream.read, daemon=True).start()
        self.running = GatewayProcess(match.group(1), int(match.group(2)), process)
        return self.running

    def __exit__(self, *exc: object) -> None:
        if self.running is not None:
            self.running.process.terminate()
            try:
                self.running.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.running.process.kill()


@contextlib.contextmanager
def serving(gateway: GatewayAddress, extra_args: Sequence[str] = ()) -> Iterator[tuple[str, int]]:
    """(host, port) to connect to: the embedded simulator, started with ``extra_args`` and
    stopped on exit, when ``gateway`` is ``sim``; else ``gateway`` itself."""
    if not gateway.embedded:
        yield gateway.host, gateway.port
        return
    with EmbeddedGateway(extra_args) as running:
        yield running.host, running.port
