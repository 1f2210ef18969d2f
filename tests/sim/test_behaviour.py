"""Each switch for IB's undocumented behaviour (issue 11), through the real ib_insync client."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from backfill.ib.client import NAME as CLIENT
from backfill.ib.client import RequestError
from backfill.sim import NO_PACING, Behaviour, FaultConfig, bars_between
from backfill.sim.behaviour import forming_row, served_interval, session_window_start
from tests.sim.helpers import UTC, crypto

pytestmark = pytest.mark.ib  # exercises the IB client: run under both (.ci/run)

MIDNIGHT = datetime(2024, 3, 2, tzinfo=UTC)  # a Saturday
MINUTE = timedelta(minutes=1)


def sim_with(make_sim, **switches):
    """A simulator with every minute traded (counts are exact) and the given switches."""
    switches.setdefault("no_trade_share", 0.0)
    config = {
        k: switches.pop(k)
        for k in ("no_trade_share", "clock", "timezone", "pacing", "faults", "max_duration_days")
        if k in switches
    }
    config.setdefault("pacing", NO_PACING)
    return make_sim(behaviour=Behaviour(**switches), **config)


def headers(ib) -> list[tuple[str, str]]:
    """The (start, end) header of every historical answer: ib_insync hands them to
    ``historicalDataEnd`` and drops them there."""
    seen: list[tuple[str, str]] = []
    original = ib.wrapper.historicalDataEnd

    def spy(req_id: int, start: str, end: str) -> None:
        seen.append((start, end))
        original(req_id, start, end)

    ib.wrapper.historicalDataEnd = spy
    return seen


def fetch(ib, end=MIDNIGHT, duration: str = "86400 S", symbol: str = "BTC", fmt: int = 2, **kwargs):
    return ib.reqHistoricalData(
        crypto(symbol), end, duration, "1 min", "AGGTRADES", False, fmt, **kwargs
    )


def wait_for(ib, predicate, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        ib.sleep(0.01)


# --- window edges ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("edges", "first", "last", "count"),
    [
        ("[)", MIDNIGHT - timedelta(days=1), MIDNIGHT - MINUTE, 1440),
        ("(]", MIDNIGHT - timedelta(days=1) + MINUTE, MIDNIGHT, 1440),
        ("[]", MIDNIGHT - timedelta(days=1), MIDNIGHT, 1441),
        ("()", MIDNIGHT - timedelta(days=1) + MINUTE, MIDNIGHT - MINUTE, 1439),
    ],
)
def test_window_edges(make_sim, connect, edges, first, last, count) -> None:
    ib = connect(sim_with(make_sim, window_edges=edges))
    bars = fetch(ib)
    assert (len(bars), bars[0].date, bars[-1].date) == (count, first, last)
    oracle = bars_between(0, "BTC", first, last + MINUTE, no_trade_share=0.0)
    assert [(b.date, b.close, b.volume) for b in bars] == [
        (b.start, b.close, b.volume) for b in oracle
    ]


def test_served_interval_is_half_open_in_bar_starts() -> None:
    start, end = MIDNIGHT - timedelta(days=1), MIDNIGHT
    assert served_interval(start, end, "[)") == (start, end)  # type: ignore[arg-type]
    low, high = served_interval(start, end, "()")  # type: ignore[arg-type]
    assert start < low < start + timedelta(seconds=1) and high == end


# --- the header: the window served, as IB writes it ----------------------------------------
def test_header_is_the_window_in_the_login_zone(make_sim, connect, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=f"{CLIENT}.client")
    ib = connect(sim_with(make_sim, timezone="America/New_York"))
    seen = headers(ib)
    assert fetch(ib) and fetch(ib, MIDNIGHT - timedelta(days=1), "2 D", fmt=1)
    # Midnight UTC is 19:00 the day before in New York (EST, UTC-5); current gateways
    # name the zone after one space (the default, --header-format named).
    assert seen == [
        ("20240229 19:00:00 America/New_York", "20240301 19:00:00 America/New_York"),
        ("20240227 19:00:00 America/New_York", "20240229 19:00:00 America/New_York"),
    ]
    # The handshake's connection time names the zone a client reads the header in.
    greeting = next(
        r.message for r in caplog.records if re.match(r"<<< \d+,\d{8} \d\d:\d\d:\d\d ", r.message)
    )
    assert greeting.endswith(" America/New_York")


def test_header_of_a_window_ending_in_the_future_ends_now(make_sim, connect) -> None:
    now = datetime(2024, 3, 1, 12, 30, 30, tzinfo=UTC)
    ib = connect(sim_with(make_sim, clock=now.timestamp))
    seen = headers(ib)
    assert fetch(ib)
    assert seen == [("20240301 00:00:00 UTC", "20240301 12:30:30 UTC")]


# --- "N D": calendar days or sessions --------------------------------------------------------
MONDAY = datetime(2024, 3, 4, tzinfo=UTC)


@pytest.mark.parametrize(
    ("switch", "first", "header_start"),
    [
        ("calendar", datetime(2024, 3, 2, tzinfo=UTC), "20240302 00:00:00 UTC"),
        # Sunday counts, Saturday is the weekly break, Friday is the second session.
        ("sessions", datetime(2024, 3, 1, tzinfo=UTC), "20240301 00:00:00 UTC"),
    ],
)
def test_day_duration(make_sim, connect, switch, first, header_start) -> None:
    ib = connect(sim_with(make_sim, day_duration=switch))
    seen = headers(ib)
    bars = fetch(ib, MONDAY, "2 D")
    assert (bars[0].date, bars[-1].date) == (first, MONDAY - MINUTE)
    assert len(bars) == (MONDAY - first) // MINUTE
    assert seen == [(header_start, "20240304 00:00:00 UTC")]
    assert fetch(ib, MONDAY, "86400 S")[0].date == MONDAY - timedelta(days=1)  # S is exact


def test_sessions_break_is_configurable_and_counts_in_the_login_zone() -> None:
    no_break = session_window_start(MONDAY, 2, UTC, frozenset())
    assert no_break == datetime(2024, 3, 3, tzinfo=UTC) - timedelta(days=1)
    weekend = session_window_start(MONDAY, 1, UTC, frozenset({"sat", "sun"}))
    assert weekend == datetime(2024, 3, 1, tzinfo=UTC)
    mid_day = datetime(2024, 3, 5, 12, tzinfo=UTC)  # a session counts whole
    assert session_window_start(mid_day, 1, UTC, frozenset()) == datetime(2024, 3, 5, tzinfo=UTC)
    new_york = ZoneInfo("America/New_York")
    assert session_window_start(mid_day, 1, new_york, frozenset()) == datetime(
        2024, 3, 5, 5, tzinfo=UTC
    )


# --- too long ----------------------------------------------------------------------------
def test_too_long_is_an_error_by_default(make_sim, connect) -> None:
    ib = connect(sim_with(make_sim, max_duration_days=2))
    with pytest.raises(RequestError) as err:
        fetch(ib, duration="3 D")
    assert err.value.code == 162 and "Time length exceed max." in err.value.message


def test_too_long_can_hang(make_sim, connect) -> None:
    sim = sim_with(make_sim, max_duration_days=2, too_long="hang")
    ib = connect(sim)
    assert list(fetch(ib, duration="3 D", timeout=0.3)) == []  # ib_insync timed out
    assert fetch(ib, duration="2 D")
    hung = [(r.outcome, r.detail) for r in sim.requests() if r.kind == "historical"]
    assert hung == [("hung", "too long"), ("bars", None)]


# --- IB's other answers ---------------------------------------------------------------------
def test_no_permission_for_some_symbols(make_sim, connect) -> None:
    ib = connect(sim_with(make_sim, no_permission=frozenset({"BTC", "eth"})))
    for symbol in ("BTC", "ETH"):
        with pytest.raises(RequestError) as err:
            fetch(ib, symbol=symbol)
        assert err.value.code == 162
        assert "No market data permissions for PAXOS CRYPTO" in err.value.message
    assert fetch(ib, symbol="LTC")
    assert ib.qualifyContracts(crypto("BTC"))  # the contract itself is known


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (162, "Trading TWS session is connected from a different IP address"),
        (10197, "No market data during competing live session"),
    ],
)
def test_competing_session_after_n_requests(make_sim, connect, code, text) -> None:
    sim = sim_with(
        make_sim, competing_session_after=2, competing_session_code=code, competing_session_for=0.5
    )
    ib = connect(sim)
    assert fetch(ib) and fetch(ib, symbol="ETH")
    began = time.monotonic()
    with pytest.raises(RequestError) as err:
        fetch(ib, symbol="LTC")
    assert err.value.code == code and text in err.value.message
    deadline = began + 3
    while True:  # it lasts competing_session_for, then requests are served again
        try:
            assert fetch(ib, symbol="LTC")
            break
        except RequestError as again:
            assert again.code == code
            assert time.monotonic() < deadline, "the competing session never ended"
            ib.sleep(0.05)
    assert time.monotonic() - began >= 0.5


def test_farm_down_holds_requests_until_it_is_back(make_sim, connect) -> None:
    sim = sim_with(make_sim, farm_down_after=1, farm_down_for=0.4)
    ib = connect(sim)
    codes: list[int] = []
    ib.errorEvent += lambda req_id, code, text, contract: codes.append(code)
    assert fetch(ib)
    began = time.monotonic()
    bars = fetch(ib, symbol="ETH", timeout=5)  # held, then answered
    assert time.monotonic() - began >= 0.4
    assert codes[-2:] == [2105, 2106]
    oracle = bars_between(0, "ETH", MIDNIGHT - timedelta(days=1), MIDNIGHT, no_trade_share=0.0)
    assert [b.date for b in bars] == [b.start for b in oracle]


def test_farm_down_and_up_from_python(make_sim, connect) -> None:
    sim = sim_with(make_sim)
    ib = connect(sim)
    sim.farm_down()
    task = asyncio.ensure_future(
        ib.reqHistoricalDataAsync(crypto(), MIDNIGHT, "3600 S", "1 min", "AGGTRADES", False, 2)
    )
    wait_for(ib, lambda: sim.open_requests() == 1)  # it reached the gateway and is held
    assert not task.done()
    sim.farm_up()
    assert len(ib.run(task)) == 60


def test_cancel_answered_366(make_sim, connect) -> None:
    sim = sim_with(make_sim, cancel_answer=366, faults=FaultConfig(latency_ms=(500, 500)))
    ib = connect(sim)
    codes: list[int] = []
    ib.errorEvent += lambda req_id, code, text, contract: codes.append(code)
    assert list(fetch(ib, timeout=0.1)) == []  # ib_insync times out and cancels
    wait_for(ib, lambda: codes == [366])
    assert [(r.outcome, r.error_code) for r in sim.requests() if r.kind == "historical"] == [
        ("cancelled", 366)
    ]


# --- the minute still forming ------------------------------------------------------------------
@pytest.mark.parametrize("partial", [False, True])
def test_partial_last_bar(make_sim, connect, partial: bool) -> None:
    now = datetime(2024, 3, 1, 12, 30, 40, tzinfo=UTC)
    ib = connect(sim_with(make_sim, clock=now.timestamp, partial_last_bar=partial))
    bars = fetch(ib)
    oracle = bars_between(0, "BTC", MIDNIGHT - timedelta(days=1), MIDNIGHT, no_trade_share=0.0)
    done = [b for b in oracle if b.start + MINUTE <= now]
    assert [(b.date, b.close) for b in bars[: len(done)]] == [(b.start, b.close) for b in done]
    if not partial:
        assert len(bars) == len(done)
        return
    assert len(bars) == len(done) + 1
    forming, final = bars[-1], oracle[len(done)]
    assert forming.date == datetime(2024, 3, 1, 12, 30, tzinfo=UTC)
    assert forming.open == final.open and 0 < forming.volume < final.volume
    assert (
        forming.low
        <= min(forming.open, forming.close)
        <= max(forming.open, forming.close)
        <= forming.high
    )


def test_forming_row_is_part_of_the_final_bar() -> None:
    row = (600, 100.0, 103.0, 98.0, 102.0, 4.0, 101.0, 40)
    assert forming_row(row, 600.0, 2) is None  # nothing traded yet
    assert forming_row(row, 660.0, 2) is None  # ended: the final bar is served instead
    half = forming_row(row, 630.0, 2)
    assert half is not None
    assert half[1] == 100.0 and half[4] == 101.0 and half[5] == 2.0 and half[7] == 20
    assert 98.0 <= half[3] <= 100.0 <= 101.0 <= half[2] <= 103.0
