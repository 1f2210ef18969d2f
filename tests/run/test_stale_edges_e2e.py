"""Issue 19 item 2: a remembered window-edge rule that no longer fits loses no bar.

The lake says ``[)`` (checked a minute ago) while the gateway behind the address now serves
``()``: the run learns the rule again on its preflight connection and goes by what it
learned, so the lake equals the generator bar for bar.
"""

from __future__ import annotations

import json
from datetime import date, datetime, timezone

import pytest

from backfill.domain import Symbol
from backfill.lake.gateway import gateway_facts_path, write_finding
from tests.oracle import expected_bars, lake_rows
from tests.run.conftest import run_backfill
from tests.run.test_edges_e2e import sim_with

pytestmark = pytest.mark.e2e
BTC = Symbol("BTC", "USD")


def test_a_remembered_rule_that_no_longer_fits_loses_no_bar(make_sim, lake):
    gateway = sim_with(make_sim, window_edges="()")
    write_finding(
        lake,
        gateway.host,
        gateway.port,
        "window_edges",
        "[)",
        {"symbol": "BTC-USD"},
        datetime.now(timezone.utc),
    )
    write_finding(
        lake, gateway.host, gateway.port, "header_format", "login", {}, datetime.now(timezone.utc)
    )  # the simulator writes "named"
    first, last = "2025-05-01", "2025-06-30"
    done = run_backfill(
        gateway, lake, ["BTC-USD"], first, last, "--rate", "50", "--window-days", "7"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    expected = expected_bars(
        gateway.market, BTC, date.fromisoformat(first), date.fromisoformat(last)
    )
    got = lake_rows(lake, BTC)
    assert len(got) == len(expected)
    assert got == expected
    assert "Window edges (): learned from the gateway" in done.stdout
    assert "remembered [), checked" in done.stdout and "no longer used" in done.stdout
    assert "recorded login: no longer used" in done.stdout
    facts = json.loads(gateway_facts_path(lake, gateway.host, gateway.port).read_text())
    assert facts["findings"]["window_edges"]["value"] == "()"
    assert facts["findings"]["header_format"]["value"] == "named"
