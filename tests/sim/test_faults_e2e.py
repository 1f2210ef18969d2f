"""Injected faults as the real client sees them: latency, hangs, errors, drops."""

from __future__ import annotations

import pytest

from backfill.ib.client import RequestError
from backfill.sim import FaultConfig
from backfill.sim.faults import decide
from tests.sim.helpers import DAY_END, crypto

pytestmark = pytest.mark.ib  # exercises the IB client: run under both (.ci/run)


def fetch(ib, symbol: str = "BTC", **kwargs):
    return ib.reqHistoricalData(
        crypto(symbol), DAY_END, "3600 S", "1 min", "AGGTRADES", False, 2, **kwargs
    )


def wait_until(ib, predicate, timeout: float = 3.0) -> None:
    """Run the client's loop until ``predicate()`` holds (events arrive on that loop)."""
    waited = 0.0
    while not predicate():
        assert waited < timeout, "condition not reached"
        ib.sleep(0.01)
        waited += 0.01


def test_latency_within_range(make_sim, connect) -> None:
    sim = make_sim(faults=FaultConfig(latency_ms=(60, 90)))
    ib = connect(sim)
    for symbol in ("BTC", "ETH", "LTC"):
        assert fetch(ib, symbol)
    waits = [r.answered - r.received for r in sim.requests() if r.kind == "historical"]
    assert all(0.06 <= w < 0.3 for w in waits)


def test_hung_request_times_out_in_client(make_sim, connect) -> None:
    sim = make_sim(faults=FaultConfig(hang_share=1.0))
    ib = connect(sim)
    codes: list[int] = []
    ib.errorEvent += lambda req_id, code, text, contract: codes.append(code)
    bars = fetch(ib, timeout=0.3)
    assert len(bars) == 0
    wait_until(ib, lambda: codes == [162])  # the client's own cancel is acknowledged
    outcomes = [(r.kind, r.outcome) for r in sim.requests() if r.kind != "connect"]
    assert outcomes == [("historical", "hung"), ("cancel", "cancelled")]


def test_transient_error(make_sim, connect) -> None:
    sim = make_sim(faults=FaultConfig(error_share=1.0))
    ib = connect(sim)
    with pytest.raises(RequestError) as err:
        fetch(ib)
    assert err.value.code == 162 and "query cancelled" in err.value.message
    sim.set_faults(FaultConfig())
    assert fetch(ib, "ETH")


def test_drop_after_n_requests(make_sim, connect) -> None:
    sim = make_sim(faults=FaultConfig(drop_after=2))
    ib = connect(sim)
    lost: list[bool] = []
    ib.disconnectedEvent += lambda: lost.append(True)
    assert fetch(ib, "BTC") and fetch(ib, "ETH")
    with pytest.raises(ConnectionError):
        fetch(ib, "LTC")
    assert lost == [True] and not ib.isConnected()
    assert [r.outcome for r in sim.requests() if r.kind == "historical"] == [
        "bars",
        "bars",
        "dropped",
    ]
    # The clientId is free again at once: a reconnect gets a fresh allowance.
    ib2 = connect(sim, client_id=1)
    assert fetch(ib2, "LTC")


def test_drop_connections_now(sim, connect) -> None:
    ib = connect(sim)
    sim.drop_connections()
    with pytest.raises(ConnectionError):  # ib_insync raises out of whatever it was running
        ib.sleep(2)
    assert not ib.isConnected()


def test_random_drops_are_reproducible() -> None:
    config = FaultConfig(
        drop_share=0.3, hang_share=0.2, error_share=0.2, seed=42, latency_ms=(1, 50)
    )
    first = [decide(config, 5, n) for n in range(1, 200)]
    assert first == [decide(config, 5, n) for n in range(1, 200)]
    assert first != [decide(FaultConfig(drop_share=0.3, seed=43), 5, n) for n in range(1, 200)]
    drops = sum(d.drop for d in first)
    assert 30 < drops < 90
    assert all(0.001 <= d.latency_s <= 0.05 for d in first)


def test_random_drop_seen_by_client(make_sim, connect) -> None:
    config = FaultConfig(drop_share=0.5, seed=7)
    first_drop = next(n for n in range(1, 100) if decide(config, 1, n).drop)
    sim = make_sim(faults=config)
    ib = connect(sim)
    symbols = ["BTC", "ETH", "LTC", "BCH", "SOL", "AVAX", "LINK", "DOGE"] * 20
    for symbol in symbols[: first_drop - 1]:
        assert fetch(ib, symbol)
    with pytest.raises(ConnectionError):
        fetch(ib, symbols[first_drop - 1])
