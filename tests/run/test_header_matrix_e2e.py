"""Issue 18: whichever way the gateway writes the served-window header, the lake equals the
generator bar for bar, at the requests per day docs/run.md states.

Every ``--header-format`` × login zone × window edges ``[)``/``()`` × ``--window-days 1``/``7``
(72 runs). Cheap by design: the real CLI in process (typer's runner; the workers are real
processes from the forkserver, over real sockets), one simulator per login zone serving
every run of its zone (its behaviour swapped between runs), and a short range per run, each
combination on days of its own (no request identical to another run's).
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from backfill.cli import app
from backfill.domain import Symbol
from backfill.sim import FAST_PACING, Behaviour, SimConfig, SimGateway
from tests.oracle import expected_bars, lake_rows
from tests.run.conftest import FAST_RULES
from tests.run.test_run_e2e import learning

pytestmark = pytest.mark.e2e
BTC = Symbol("BTC", "USD")
FORMATS = ("login", "named", "utc-dash", "dashed", "utc-bare", "epoch")
ZONES = ("UTC", "America/New_York", "Asia/Hong_Kong")
EDGES = ("[)", "()")
WINDOW_DAYS = (1, 7)
COMBINATIONS = list(itertools.product(FORMATS, ZONES, EDGES, WINDOW_DAYS))
FIRST_DAY = date(2024, 1, 1)  # combination n asks the week from FIRST_DAY + 7 n (DST included)


@pytest.fixture(scope="module")
def gateways() -> Iterator[dict[str, SimGateway]]:
    """One simulator per login zone, started on first use, for the module's runs."""
    started: dict[str, SimGateway] = {}

    class Lazy(dict):
        def __missing__(self, zone: str) -> SimGateway:
            started[zone] = SimGateway(
                SimConfig(port=0, pacing=FAST_PACING, timezone=zone, keep_requests=True)
            ).start()
            return started[zone]

    yield Lazy()
    for gateway in started.values():
        gateway.stop()


def run_in_process(gateway: SimGateway, lake: Path, first: date, last: date, window_days: int):
    return CliRunner().invoke(
        app,
        [
            "run",
            "--gateway",
            f"{gateway.host}:{gateway.port}",
            "--lake",
            str(lake),
            "--symbols",
            "BTC-USD",
            "--from",
            str(first),
            "--to",
            str(last),
            "--rate",
            "50",
            "--window-days",
            str(window_days),
            *FAST_RULES,
        ],
    )


def asked_for_days(gateway: SimGateway, since: float) -> list:
    """The run's answered requests for days (learning and refusals under load apart)."""
    return [
        r
        for r in gateway.requests()
        if r.kind == "historical"
        and r.received >= since
        and not learning(r)
        and r.outcome in ("bars", "no_data")
    ]


@pytest.mark.parametrize(
    ("form", "zone", "edges", "window_days"),
    COMBINATIONS,
    ids=["-".join(map(str, c)) for c in COMBINATIONS],
)
def test_every_header_format_zone_and_rule_lands_the_generators_bars(
    gateways,
    tmp_path,
    form,
    zone,
    edges,
    window_days,
):
    gateway = gateways[zone]
    gateway.set_behaviour(Behaviour(header_format=form, window_edges=edges))
    # 7 days show one request a week; 2 show one a day.
    first = FIRST_DAY + timedelta(days=7 * COMBINATIONS.index((form, zone, edges, window_days)))
    last = first + timedelta(days=window_days if window_days > 1 else 2) - timedelta(days=1)
    since = time.time()
    done = run_in_process(gateway, tmp_path / "lake", first, last, window_days)
    assert done.exit_code == 0, done.output[-3000:]
    # 2 requests; 3 when the pair sent with the survey lacks a bar (tests/run/test_edges_e2e).
    assert re.search(
        rf"Window edges {re.escape(edges)}: learned from the gateway: [23] requests", done.output
    )
    assert f"Served-window header ({form}): " in done.output  # trusted: no "untrusted"
    assert lake_rows(tmp_path / "lake", BTC) == expected_bars(gateway.market, BTC, first, last)
    days = (last - first).days + 1
    assert len(asked_for_days(gateway, since)) == days // window_days  # docs/run.md: 1 or 1/7


@pytest.mark.parametrize("edges", EDGES)
def test_a_header_that_lies_by_an_hour_is_untrusted_and_the_run_is_still_whole(
    gateways,
    tmp_path,
    edges,
):
    gateway = gateways["America/New_York"]
    gateway.set_behaviour(Behaviour(header_format="named", window_edges=edges, header_shift_s=3600))
    first = FIRST_DAY + timedelta(days=7 * (len(COMBINATIONS) + EDGES.index(edges)))
    last = first + timedelta(days=6)
    since = time.time()
    done = run_in_process(gateway, tmp_path / "lake", first, last, 7)
    assert done.exit_code == 0, done.output[-3000:]
    assert "Served-window header (named) untrusted" in done.output
    assert "--window-days 7 clipped to 1" in done.output
    assert lake_rows(tmp_path / "lake", BTC) == expected_bars(gateway.market, BTC, first, last)
    asked = asked_for_days(gateway, since)
    # One day a request, in seconds (taken as served): never "N D", whose extent is IB's.
    assert sorted(r.duration for r in asked) == ["86400 S" if edges == "[)" else "86460 S"] * 7


def test_a_login_zone_this_machine_cannot_read_is_one_line_naming_tzdata(gateways, tmp_path):
    """As on Windows without the tzdata package: no zone database at all. The run stops
    before writing anything (exit 2), with one line saying what to install."""
    gateway = gateways["America/New_York"]
    gateway.set_behaviour(Behaviour(header_format="login"))
    empty = tmp_path / "no-zones"
    empty.mkdir()
    code = (
        "import sys; sys.modules['tzdata'] = None; sys.argv[0] = 'backfill'; "
        "from backfill.entry import main; main()"
    )
    first = FIRST_DAY + timedelta(days=7 * (len(COMBINATIONS) + 2))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "run",
            "--gateway",
            f"{gateway.host}:{gateway.port}",
            "--lake",
            str(tmp_path / "lake"),
            "--symbols",
            "BTC-USD",
            "--from",
            str(first),
            "--to",
            str(first),
            "--rate",
            "50",
            *FAST_RULES,
        ],
        env={**os.environ, "PYTHONTZPATH": str(empty)},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install tzdata" in lines[0], done.stderr
    assert "America/New_York" in lines[0]
    assert not (tmp_path / "lake").exists()
