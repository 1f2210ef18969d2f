"""Requests the simulator does not serve end at once with their own id, and a zone-less end
gets TWS's warning 2174 before it is served (issue 18), through the real ib_insync client."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

import pytest

from backfill.ib.client import MarketOrder, RequestError
from backfill.sim import NO_PACING, bars_between
from backfill.sim.gateway import TEXT_IMPLIED_ZONE
from tests.sim.helpers import UTC, crypto

pytestmark = pytest.mark.ib  # exercises the IB client: run under both (.ci/run)


def errors(ib) -> list[tuple[int, int, str]]:
    seen: list[tuple[int, int, str]] = []
    ib.errorEvent += lambda req_id, code, text, _contract: seen.append((req_id, code, text))
    return seen


def test_a_symbol_search_fails_at_once_with_its_id(sim, connect) -> None:
    ib = connect(sim)
    seen = errors(ib)
    began = time.monotonic()
    # ib_insync would wait forever: reqMatchingSymbols has no timeout of its own.
    with pytest.raises(RequestError) as err:
        ib.reqMatchingSymbols("BTC")
    assert time.monotonic() - began < 10  # answered, not left to hang (loaded CI: seconds)
    [(req_id, code, text)] = seen
    assert (err.value.reqId, err.value.code) == (req_id, code) == (req_id, 322)
    assert "reqMatchingSymbols" in text
    record = next(r for r in sim.requests() if r.kind == "unsupported")
    assert (record.req_id, record.error_code, record.detail) == (req_id, 322, "msg_id=81")


def test_an_order_is_rejected_at_once_and_its_trade_ends(sim, connect) -> None:
    ib = connect(sim)
    seen = errors(ib)
    trade = ib.placeOrder(crypto(), MarketOrder("BUY", 1))
    deadline = time.monotonic() + 10
    while not trade.isDone():
        assert time.monotonic() < deadline, "the order was left open"
        ib.waitOnUpdate(timeout=0.5)  # the client's next message, not a fixed nap
    assert trade.orderStatus.status == "Cancelled"
    assert seen == [(trade.order.orderId, 201, seen[0][2])]
    assert seen[0][2].startswith("Order rejected - reason:")


def test_cancelling_an_unknown_order_is_10147(sim, connect) -> None:
    ib = connect(sim)
    seen = errors(ib)
    ib.client.cancelOrder(77, "")
    deadline = time.monotonic() + 10
    while not seen:
        assert time.monotonic() < deadline
        ib.waitOnUpdate(timeout=0.5)  # the client's next message, not a fixed nap
    assert seen == [(77, 10147, "OrderId 77 that needs to be cancelled is not found.")]


def test_market_data_is_not_subscribed(sim, connect) -> None:
    ib = connect(sim)
    seen = errors(ib)
    contract = crypto()
    ib.qualifyContracts(contract)  # ib_async keys tickers by conId: unqualified, it raises
    ticker = ib.reqMktData(contract)
    deadline = time.monotonic() + 10
    while not seen:
        assert time.monotonic() < deadline
        ib.waitOnUpdate(timeout=0.5)  # the client's next message, not a fixed nap
    assert seen[0][:2] == (ib.wrapper.ticker2ReqId["mktData"][ticker], 354)


def test_lists_without_a_request_id_are_answered_empty(sim, connect) -> None:
    ib = connect(sim)
    for ask in (ib.reqMktDepthExchangesAsync, ib.reqNewsProvidersAsync, ib.reqAllOpenOrdersAsync):
        # None of them has a timeout of its own: bound the wait here.
        assert ib.run(asyncio.wait_for(ask(), 2)) == []


def test_bars_are_still_served_after_refusals(sim, connect) -> None:
    ib = connect(sim)
    with pytest.raises(RequestError):
        ib.reqMatchingSymbols("ETH")
    ib.placeOrder(crypto(), MarketOrder("SELL", 1))
    end = datetime(2024, 3, 1, tzinfo=UTC)
    bars = ib.reqHistoricalData(crypto(), end, "3600 S", "5 mins", "AGGTRADES", False, 2)
    assert len(bars) == 12 and bars[0].date == end - timedelta(hours=1)


# --- 2174: an end without a zone ---------------------------------------------------------
@pytest.mark.parametrize(
    ("end", "warned"),
    [
        ("20240301 12:00:00", True),
        ("20240301", True),
        ("20240301 17:00:00 UTC", False),
        ("20240301-17:00:00", False),
        (datetime(2024, 3, 1, 17, tzinfo=UTC), False),
    ],
)
def test_a_zone_less_end_is_warned_2174_then_read_in_the_login_zone(
    make_sim, connect, end, warned
) -> None:
    ib = connect(make_sim(pacing=NO_PACING, timezone="America/New_York"))
    seen = errors(ib)
    bars = ib.reqHistoricalData(crypto(), end, "3600 S", "1 min", "AGGTRADES", False, 2)
    # 12:00 in New York (EST) is 17:00 UTC; a bare date is its midnight there (05:00 UTC).
    stop = datetime(2024, 3, 1, 5 if end == "20240301" else 17, tzinfo=UTC)
    oracle = bars_between(0, "BTC", stop - timedelta(hours=1), stop)
    assert [b.date for b in bars] == [o.start for o in oracle]
    warnings = [(code, text) for _req, code, text in seen if code == 2174]
    assert warnings == ([(2174, TEXT_IMPLIED_ZONE)] if warned else [])
    if warned:
        assert seen[0][0] > 0  # carries the request's id, not -1
