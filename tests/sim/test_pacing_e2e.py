"""Each of IB's pacing rules, tripped through the real client and answered with 162."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from backfill.ib.client import RequestError
from backfill.sim import FaultConfig, PacingConfig
from backfill.sim.pacing import PACING_TEXT
from tests.sim.helpers import DAY_END, crypto

pytestmark = pytest.mark.ib  # exercises the IB client: run under both (.ci/run)

QUIET = PacingConfig(soft_rate=None, max_rate=None)


def fetch(ib, symbol: str = "BTC", days_back: int = 0, **kwargs):
    end = DAY_END - timedelta(days=days_back)
    return ib.reqHistoricalData(
        crypto(symbol), end, "86400 S", "1 min", "AGGTRADES", False, 2, **kwargs
    )


def assert_paced(ib, symbol: str = "BTC", days_back: int = 0) -> None:
    with pytest.raises(RequestError) as err:
        fetch(ib, symbol, days_back)
    assert err.value.code == 162 and err.value.message == PACING_TEXT


def test_identical_request_within_window(make_sim, connect) -> None:
    sim = make_sim(pacing=QUIET)
    ib = connect(sim)
    assert fetch(ib)
    assert_paced(ib)
    assert [r.detail for r in sim.requests() if r.error_code == 162] == ["identical"]


def test_identical_rule_spans_connections(make_sim, connect) -> None:
    sim = make_sim(pacing=QUIET)
    assert fetch(connect(sim, client_id=1))
    assert_paced(connect(sim, client_id=2))


def test_identical_request_allowed_after_window(make_sim, connect) -> None:
    sim = make_sim(pacing=PacingConfig(identical_window_s=0.3, soft_rate=None, max_rate=None))
    ib = connect(sim)
    assert fetch(ib)
    ib.sleep(0.35)
    assert fetch(ib)


def test_six_requests_for_one_contract(make_sim, connect) -> None:
    sim = make_sim(pacing=PacingConfig(contract_window_s=10, soft_rate=None, max_rate=None))
    ib = connect(sim)
    for day in range(5):
        assert fetch(ib, days_back=day)
    assert fetch(ib, "ETH")  # another contract is not affected
    assert_paced(ib, days_back=5)
    assert [r.detail for r in sim.requests() if r.error_code == 162] == ["contract"]


def test_sixty_in_ten_minutes_strict(make_sim, connect) -> None:
    pacing = PacingConfig(
        strict=True, session_max=4, session_window_s=60, soft_rate=None, max_rate=None
    )
    sim = make_sim(pacing=pacing)
    ib = connect(sim)
    for i, symbol in enumerate(("BTC", "ETH", "LTC", "BCH")):
        assert fetch(ib, symbol, i)
    assert_paced(ib, "SOL")
    assert [r.detail for r in sim.requests() if r.error_code == 162] == ["session"]


def test_session_rule_only_for_small_bars_unless_strict(make_sim, connect) -> None:
    pacing = PacingConfig(session_max=2, session_window_s=60, soft_rate=None, max_rate=None)
    sim = make_sim(pacing=pacing)
    ib = connect(sim)
    for i, symbol in enumerate(("BTC", "ETH", "LTC")):
        assert fetch(ib, symbol, i)  # 1-minute bars: no hard 60/10 rule
    with pytest.raises(RequestError) as err:  # 30-second bars count: the session is full
        ib.reqHistoricalData(crypto("SOL"), DAY_END, "3600 S", "30 secs", "AGGTRADES", False, 2)
    assert err.value.code == 162 and err.value.message == PACING_TEXT


def test_max_rate_ceiling(make_sim, connect) -> None:
    sim = make_sim(pacing=PacingConfig(max_rate=1.0, rate_window_s=3, soft_rate=None))
    ib = connect(sim)
    for i, symbol in enumerate(("BTC", "ETH", "LTC")):
        assert fetch(ib, symbol, i)
    assert_paced(ib, "BCH")
    assert [r.detail for r in sim.requests() if r.error_code == 162] == ["max_rate"]


def test_soft_throttle_delays_answers(make_sim, connect) -> None:
    sim = make_sim(pacing=PacingConfig(soft_rate=10.0, soft_burst=2, max_rate=None))
    ib = connect(sim)

    async def burst() -> list[object]:
        return await asyncio.gather(
            *(
                ib.reqHistoricalDataAsync(
                    crypto(s), DAY_END, "3600 S", "1 min", "AGGTRADES", False, 2
                )
                for s in ("BTC", "ETH", "LTC", "BCH", "SOL")
            )
        )

    assert all(ib.run(burst()))
    answered = sorted(r.answered for r in sim.requests() if r.kind == "historical")
    first = min(r.received for r in sim.requests() if r.kind == "historical")
    # two pass at once, the other three queue at 10 requests/s behind them (load on the
    # machine can only add to these delays, so only lower bounds are asserted)
    assert answered[4] - first >= 0.28
    assert sum(1 for t in answered if t - first < 0.09) <= 2


def test_more_than_max_open_requests_refused(make_sim, connect) -> None:
    sim = make_sim(
        pacing=PacingConfig(max_open=2, soft_rate=None, max_rate=None),
        faults=FaultConfig(hang_share=1.0),
    )
    ib = connect(sim)

    async def three() -> list[object]:
        return await asyncio.gather(
            *(
                ib.reqHistoricalDataAsync(
                    crypto(s), DAY_END, "86400 S", "1 min", "AGGTRADES", False, 2, timeout=1.0
                )
                for s in ("BTC", "ETH", "LTC")
            ),
            return_exceptions=True,
        )

    results = ib.run(three())
    errors = [r for r in results if isinstance(r, RequestError)]
    assert [e.code for e in errors] == [322]
    timed_out = [r for r in results if not isinstance(r, Exception) and len(r) == 0]
    assert len(timed_out) == 2  # the hung ones time out in the client


def test_message_rate_limit_answers_error_100(make_sim, connect) -> None:
    sim = make_sim(pacing=PacingConfig(max_msg_rate=8, soft_rate=None, max_rate=None))
    ib = connect(sim)  # connecting sends 6 messages: let that second pass
    ib.sleep(1.05)

    async def many() -> list[object]:
        return await asyncio.gather(
            *(ib.reqContractDetailsAsync(crypto("BTC")) for _ in range(12)),
            return_exceptions=True,
        )

    results = ib.run(many())
    codes = [r.code for r in results if isinstance(r, RequestError)]
    assert codes == [100] * 4


def test_no_pacing_allows_everything(make_sim, connect) -> None:
    sim = make_sim(pacing=PacingConfig(enabled=False, identical_window_s=60))
    ib = connect(sim)
    for _ in range(7):
        assert fetch(ib)
