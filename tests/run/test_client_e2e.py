"""Which IB client ran: the run log's first record names it (``backfill/ib/client.py``)."""

from __future__ import annotations

import json
from datetime import date

import pytest

from backfill import __version__
from backfill.domain import Symbol
from backfill.ib import client
from tests.oracle import expected_bars, lake_rows
from tests.run.conftest import run_backfill

pytestmark = [pytest.mark.e2e, pytest.mark.ib]
BTC = Symbol("BTC", "USD")


def test_a_run_lands_its_days_and_its_log_names_the_client(sim, lake):
    done = run_backfill(sim, lake, ["BTC-USD"], "2025-07-01", "2025-07-02", "--rate", "50")
    assert done.returncode == 0, done.stderr + done.stdout
    assert lake_rows(lake, BTC) == expected_bars(
        sim.market, BTC, date(2025, 7, 1), date(2025, 7, 2)
    )
    [log] = (lake / "_runs").glob("*.jsonl")
    first = json.loads(log.read_text().splitlines()[0])
    assert {
        k: first.get(k) for k in ("event", "symbol", "version", "client", "client_version")
    } == {
        "event": "run_started",
        "symbol": "",
        "version": __version__,
        "client": client.NAME,
        "client_version": client.VERSION,
    }
