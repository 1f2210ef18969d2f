"""The simulator against the real ib_insync client over a real socket."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from backfill.ib.client import RequestError, new_ib
from backfill.sim import NO_PACING, SimGateway, bars_between, read_log
from tests.sim.helpers import DAY_END, UTC, crypto

pytestmark = pytest.mark.ib  # exercises the IB client: run under both (.ci/run)


@pytest.mark.parametrize("readonly", [False, True])
def test_connect_both_modes(sim: SimGateway, connect, readonly: bool) -> None:
    ib = connect(sim, readonly=readonly)
    assert ib.isConnected()
    assert ib.managedAccounts() == [sim.config.account]
    kinds = [r.kind for r in sim.requests()]
    assert kinds == ["connect"]


def test_qualify_known_and_unknown(sim: SimGateway, connect) -> None:
    ib = connect(sim)
    btc, eth = crypto("BTC"), crypto("ETH")
    assert ib.qualifyContracts(btc, eth) == [btc, eth]
    assert btc.conId > 0 and btc.localSymbol == "BTC.USD" and btc.exchange == "PAXOS"
    assert btc.conId != eth.conId
    with pytest.raises(RequestError) as err:
        ib.reqContractDetails(crypto("NOPE"))
    assert err.value.code == 200


def test_full_day_of_aggtrades(sim: SimGateway, connect) -> None:
    ib = connect(sim)
    bars = ib.reqHistoricalData(
        crypto(), DAY_END, "86400 S", "1 min", "AGGTRADES", useRTH=False, formatDate=2, timeout=10
    )
    window_start = DAY_END - timedelta(days=1)
    assert 1300 < len(bars) <= 1440
    starts = [b.date for b in bars]
    assert starts == sorted(set(starts))
    assert all(window_start <= s < DAY_END for s in starts)
    # bar END = start + 1 min: the day ending at 2024-03-02 00:00 holds exactly these bars.
    assert all(
        datetime(2024, 3, 1, tzinfo=UTC)
        <= s + timedelta(minutes=1)
        <= DAY_END + timedelta(minutes=1)
        for s in starts
    )
    for bar in bars:
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.low <= bar.average <= bar.high
        assert bar.volume > 0 and isinstance(bar.barCount, int) and bar.barCount >= 1
    assert any(b.volume != int(b.volume) for b in bars)
    oracle = bars_between(
        sim.config.seed, "BTC", window_start, DAY_END, no_trade_share=sim.config.no_trade_share
    )
    assert [
        (b.start, b.open, b.high, b.low, b.close, b.volume, b.wap, b.bar_count) for b in oracle
    ] == [(b.date, b.open, b.high, b.low, b.close, b.volume, b.average, b.barCount) for b in bars]


def test_same_window_twice_is_identical(make_sim, connect) -> None:
    sim = make_sim(pacing=NO_PACING)
    ib = connect(sim)
    first = ib.reqHistoricalData(crypto("ETH"), DAY_END, "86400 S", "1 min", "AGGTRADES", False, 2)
    second = ib.reqHistoricalData(crypto("ETH"), DAY_END, "86400 S", "1 min", "AGGTRADES", False, 2)
    assert first and list(first) == list(second)


def test_overlapping_windows_agree(sim: SimGateway, connect) -> None:
    ib = connect(sim)
    a = ib.reqHistoricalData(crypto("SOL"), DAY_END, "86400 S", "1 min", "AGGTRADES", False, 2)
    b = ib.reqHistoricalData(
        crypto("SOL"), DAY_END + timedelta(hours=7), "2 D", "1 min", "AGGTRADES", False, 2
    )
    common = {bar.date for bar in a} & {bar.date for bar in b}
    assert len(common) == len(a)
    by_date = {bar.date: bar for bar in b}
    assert all(by_date[bar.date] == bar for bar in a)


def test_format_date_1_is_session_time(sim: SimGateway, connect) -> None:
    ib = connect(sim)
    bars = ib.reqHistoricalData(
        crypto(), "20240301 12:00:00 UTC", "3600 S", "1 min", "AGGTRADES", False, formatDate=1
    )
    # "20240301 11:00:00 UTC": the login zone's wall clock and name (tests/sim/
    # test_header_format.py has the other zones and renderings).
    assert bars and all(b.date.tzinfo is not None for b in bars)
    assert all(
        datetime(2024, 3, 1, 11, tzinfo=UTC) <= b.date < datetime(2024, 3, 1, 12, tzinfo=UTC)
        for b in bars
    )


def test_trades_refused_with_10299(sim: SimGateway, connect) -> None:
    ib = connect(sim)
    with pytest.raises(RequestError) as err:
        ib.reqHistoricalData(crypto(), DAY_END, "86400 S", "1 min", "TRADES", False, 2)
    assert err.value.code == 10299


def test_unknown_symbol_in_historical_request_is_200(sim: SimGateway, connect) -> None:
    ib = connect(sim)
    with pytest.raises(RequestError) as err:
        ib.reqHistoricalData(crypto("NOPE"), DAY_END, "86400 S", "1 min", "AGGTRADES", False, 2)
    assert err.value.code == 200


@pytest.mark.parametrize(
    ("duration", "bar_size", "code", "text"),
    [
        ("11 D", "1 min", 162, "Time length exceed max."),
        ("1 M", "1 min", 321, "Error validating request"),
        ("86400 S", "7 mins", 321, "Error validating request"),
        # IB has seconds bars; the simulator's market is made of minutes.
        ("3600 S", "5 secs", 162, "not served"),
    ],
)
def test_bad_duration_or_bar_size(sim, connect, duration, bar_size, code, text) -> None:
    ib = connect(sim)
    with pytest.raises(RequestError) as err:
        ib.reqHistoricalData(crypto(), DAY_END, duration, bar_size, "AGGTRADES", False, 2)
    assert err.value.code == code and text in err.value.message


def test_before_listing_is_no_data(make_sim, connect) -> None:
    sim = make_sim(listings={"BTC": datetime(2024, 1, 1, tzinfo=UTC)})
    ib = connect(sim)
    with pytest.raises(RequestError) as err:
        ib.reqHistoricalData(
            crypto(), "20231201 00:00:00 UTC", "86400 S", "1 min", "AGGTRADES", False, 2
        )
    assert err.value.code == 162
    assert err.value.message.endswith("HMDS query returned no data: BTC.USD@PAXOS AggTrades")
    first = ib.reqHeadTimeStamp(crypto(), "AGGTRADES", useRTH=False, formatDate=2)
    assert first == min(
        b.start
        for b in bars_between(
            0,
            "BTC",
            datetime(2024, 1, 1, tzinfo=UTC),
            datetime(2024, 1, 2, tzinfo=UTC),
            listing=datetime(2024, 1, 1, tzinfo=UTC),
        )
    )
    straddle = ib.reqHistoricalData(
        crypto(), "20240101 12:00:00 UTC", "86400 S", "1 min", "AGGTRADES", False, 2
    )
    assert straddle and straddle[0].date >= datetime(2024, 1, 1, tzinfo=UTC)


def test_future_window_returns_bars_up_to_now(make_sim, connect) -> None:
    now = datetime(2024, 3, 1, 12, 30, 30, tzinfo=UTC)
    sim = make_sim(clock=now.timestamp)
    ib = connect(sim)
    bars = ib.reqHistoricalData(crypto(), DAY_END, "86400 S", "1 min", "AGGTRADES", False, 2)
    assert bars and bars[-1].date <= datetime(2024, 3, 1, 12, 29, tzinfo=UTC)
    assert bars[-1].date >= datetime(2024, 3, 1, 12, 20, tzinfo=UTC)


def test_duplicate_client_id_gets_326(sim: SimGateway, connect) -> None:
    connect(sim, client_id=7)
    second = new_ib()
    codes: list[int] = []
    second.errorEvent += lambda req_id, code, text, contract: codes.append(code)
    with pytest.raises((asyncio.TimeoutError, TimeoutError, ConnectionError)):
        second.connect(sim.host, sim.port, clientId=7, timeout=1)
    assert codes == [326]
    assert not second.isConnected()
    assert [r.error_code for r in sim.requests() if r.kind == "connect"] == [None, 326]


def test_client_id_free_again_after_disconnect(sim: SimGateway, connect) -> None:
    ib = connect(sim, client_id=3)
    ib.disconnect()
    assert connect(sim, client_id=3).isConnected()


def test_request_log_matches_what_was_sent(make_sim, connect, tmp_path) -> None:
    log_path = tmp_path / "requests.jsonl"
    sim = make_sim(log_path=log_path)
    ib = connect(sim, client_id=11)
    sent = []
    for symbol, days in (("BTC", 0), ("ETH", 1), ("LTC", 2)):
        end = DAY_END - timedelta(days=days)
        bars = ib.reqHistoricalData(crypto(symbol), end, "86400 S", "1 min", "AGGTRADES", False, 2)
        sent.append((symbol, end, len(bars)))
    records = [r for r in sim.requests() if r.kind == "historical"]
    assert read_log(log_path) == sim.requests()
    assert [(r.symbol, r.window_end, r.bars) for r in records] == [
        (s, e.isoformat(), n) for s, e, n in sent
    ]
    for record, (_s, end, _n) in zip(records, sent, strict=True):
        assert record.client_id == 11 and record.outcome == "bars"
        assert record.window_start == (end - timedelta(days=1)).isoformat()
        assert record.end == end.strftime("%Y%m%d %H:%M:%S UTC")
        assert record.received <= record.answered
