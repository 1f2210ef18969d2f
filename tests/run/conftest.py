"""Helpers for end-to-end runs: the real CLI in a real process against a real simulator."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

# The simulator fixtures use FAST_PACING (IB's limits scaled down); the workers are told
# the same scaled limits, as an operator would for a scaled gateway.
FAST_RULES = ("--ib-identical-s", "1.5", "--ib-contract-window-s", "0.2")


def backfill(*args: str) -> list[str]:
    return [sys.executable, "-m", "backfill", *args]


def run_args(
    gateway, lake: Path, symbols: Sequence[str], first: str, last: str, *extra: str
) -> list[str]:
    return backfill(
        "run",
        "--gateway",
        f"{gateway.host}:{gateway.port}",
        "--lake",
        str(lake),
        "--symbols",
        ",".join(symbols),
        "--from",
        first,
        "--to",
        last,
        *FAST_RULES,
        *extra,
    )


def run_backfill(
    gateway,
    lake: Path,
    symbols: Sequence[str],
    first: str,
    last: str,
    *extra: str,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        run_args(gateway, lake, symbols, first, last, *extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    return tmp_path / "lake"
