"""``backfill gateway`` as another process runs it: one ready line, SIGTERM exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from backfill.ib.client import RequestError, new_ib
from backfill.sim import (
    Behaviour,
    DayDuration,
    HeaderFormat,
    Overload,
    TooLong,
    WindowEdges,
    read_log,
)
from backfill.sim.flags import GatewayFlags
from tests.sim.cli_helpers import start_gateway
from tests.sim.helpers import DAY_END, crypto

pytestmark = pytest.mark.ib  # exercises the IB client: run under both (.ci/run)


def test_gateway_command_serves_and_stops_on_sigterm(tmp_path) -> None:
    log = tmp_path / "requests.jsonl"
    proc, port = start_gateway(
        "--seed",
        "5",
        "--latency-ms",
        "1-3",
        "--no-pacing",
        "--log",
        str(log),
        "--symbols",
        "BTC,ETH-USD",
    )
    try:
        ib = new_ib()
        ib.connect("127.0.0.1", port, clientId=9, timeout=5)
        assert ib.qualifyContracts(crypto("ETH"))
        assert not any(ib.qualifyContracts(crypto("LTC")))  # ib_insync [], ib_async [None]
        bars = ib.reqHistoricalData(
            crypto("BTC"), DAY_END, "86400 S", "1 min", "AGGTRADES", False, 2
        )
        ib.disconnect()
        assert bars
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    records = read_log(log)
    hist = [r for r in records if r.kind == "historical"]
    assert [(r.client_id, r.symbol, r.bars) for r in hist] == [(9, "BTC", len(bars))]


@pytest.mark.parametrize(
    "flags",
    [
        ["--latency-ms", "9-3"],
        ["--latency-ms", "x"],
        ["--seed", "x"],
        ["--hang-share", "2"],
        ["--port", "70000"],
        ["--port", "-1"],
        ["--symbols", ","],
        ["--soft-rate", "nan"],
        ["--max-duration-days", "0"],
        ["--no-trade-share", "1"],
        ["--max-open", "0"],
        ["--bogus"],
        ["--port"],
        ["--window-edges", "[["],
        ["--timezone", "Mars/Base"],
        ["--day-duration", "weeks"],
        ["--session-break", "sat,xyz"],
        ["--too-long", "maybe"],
        ["--competing-session-code", "5"],
        ["--cancel-answer", "200"],
        ["--overload", "x"],
        ["--overload-queue", "0"],
        ["--farm-down-for", "-1"],
        ["--parent-pid", "0"],
        ["--header-format", "iso"],
        ["--header-shift-s", "1.5"],
    ],
)
def test_bad_flags_exit_2_with_one_line(flags: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "backfill", "gateway", *flags],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("backfill: error: ")


def test_help_shows_numbers_with_their_bounds() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "backfill", "gateway", "--help"],
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0
    lines = {
        line.split()[1]: line
        for line in result.stdout.splitlines()
        if line.strip("│ ").startswith("--")
    }
    assert "0<=x<=65535" in lines["--port"]
    assert "0.0<=x<=1.0" in lines["--hang-share"]
    assert "x>=1" in lines["--max-open"]
    assert "MIN-MAX" in lines["--latency-ms"]
    assert "<login|named|utc-dash|dashed|utc-bare|epoch>" in lines["--header-format"]
    assert "[default: named]" in result.stdout.split("--header-format", 1)[1]
    assert "<int>" in lines["--header-shift-s"]


def test_switches_reach_the_gateway_process() -> None:
    proc, port = start_gateway(
        "--window-edges",
        "()",
        "--timezone",
        "America/New_York",
        "--no-permission",
        "eth",
        "--no-trade-share",
        "0",
    )
    try:
        ib = new_ib()
        ib.connect("127.0.0.1", port, clientId=3, timeout=5)
        ib.RaiseRequestErrors = True
        bars = ib.reqHistoricalData(
            crypto("BTC"), DAY_END, "86400 S", "1 min", "AGGTRADES", False, 2
        )
        assert len(bars) == 1439
        with pytest.raises(RequestError) as err:
            ib.reqHistoricalData(crypto("ETH"), DAY_END, "86400 S", "1 min", "AGGTRADES", False, 2)
        assert err.value.code == 162 and "No market data permissions" in err.value.message
        ib.disconnect()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_flags_build_the_behaviour() -> None:
    config = GatewayFlags(
        window_edges="(]",
        timezone="Europe/Zurich",
        day_duration="sessions",
        session_break="sat,SUN",
        too_long="hang",
        no_permission="BTC-USD,eth",
        competing_session_after=3,
        competing_session_for=1.5,
        competing_session_code=10197,
        farm_down_after=2,
        farm_down_for=4.0,
        partial_last_bar=True,
        cancel_answer=366,
        overload="disconnect",
        overload_queue=4,
        overload_after=7.0,
        header_format="utc-dash",
        header_shift_s=-3600,
    ).to_config()
    assert config.timezone == "Europe/Zurich"
    assert config.behaviour == Behaviour(
        window_edges=WindowEdges.OPEN_CLOSED,
        day_duration=DayDuration.SESSIONS,
        session_break=frozenset({"sat", "sun"}),
        too_long=TooLong.HANG,
        no_permission=frozenset({"BTC", "ETH"}),
        competing_session_after=3,
        competing_session_for=1.5,
        competing_session_code=10197,
        farm_down_after=2,
        farm_down_for=4.0,
        partial_last_bar=True,
        cancel_answer=366,
        overload=Overload.DISCONNECT,
        overload_queue=4,
        overload_after_s=7.0,
        header_format=HeaderFormat.UTC_DASH,
        header_shift_s=-3600,
    )
    assert GatewayFlags().to_config().behaviour == Behaviour()  # defaults unchanged
    assert GatewayFlags(session_break="none").to_config().behaviour.session_break == frozenset()
