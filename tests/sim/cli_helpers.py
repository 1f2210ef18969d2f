"""Start ``backfill gateway`` as another process would."""

from __future__ import annotations

import re
import subprocess
import sys


def start_gateway(*flags: str) -> tuple[subprocess.Popen[str], int]:
    """``backfill gateway --port 0 FLAGS``, once it listens: the process and its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "backfill", "gateway", "--port", "0", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.fullmatch(r"gateway listening on 127\.0\.0\.1:(\d+)\n", line)
    assert match, line
    return proc, int(match.group(1))
