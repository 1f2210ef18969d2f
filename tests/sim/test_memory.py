"""The simulator's memory is bounded whatever the range it serves (issue 10, bug 11)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from backfill.sim import SimConfig, SimGateway, bars_between
from backfill.sim.cache import ByteLRU
from backfill.sim.market import Market
from backfill.sim.records import RequestLog, RequestRecord, read_log
from tests.sim.helpers import DAY_END, crypto

pytestmark = pytest.mark.ib  # exercises the IB client: run under both (.ci/run)


def test_byte_lru_evicts_least_recently_used_past_its_budget() -> None:
    cache: ByteLRU[str, str] = ByteLRU(100)
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # "b" is now the least recently used
    cache.put("c", "C", 40)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == ("A", None, "C")
    assert cache.nbytes == 80
    cache.put("big", "X", 101)  # alone over budget: not kept, nothing evicted for it
    assert cache.get("big") is None and len(cache) == 2
    cache.put("a", "A2", 90)  # replacing a key frees its old size first
    assert cache.get("a") == "A2" and cache.get("c") is None and cache.nbytes == 90


def test_market_cache_stays_within_its_byte_budget() -> None:
    budget = 400_000  # about four days of compact columns
    market = Market(0, cache_bytes=budget)
    start = DAY_END - timedelta(days=10)
    bars = market.bars("BTC", start, DAY_END)
    assert 0 < market.cached_bytes <= budget
    assert bars == bars_between(0, "BTC", start, DAY_END)


def test_gateway_serves_a_month_within_its_cache_budget(make_sim, connect) -> None:
    sim = make_sim(cache_mb=1)
    ib = connect(sim)
    end = DAY_END
    for _ in range(3):  # 3 requests of 10 days: 30 days, far more than 1 MB encoded
        bars = ib.reqHistoricalData(crypto("ETH"), end, "10 D", "1 min", "AGGTRADES", False, 2)
        expected = bars_between(0, "ETH", end - timedelta(days=10), end)
        assert [b.date for b in bars] == [b.start for b in expected]
        assert 0 < sim.cached_bytes <= 1 << 20
        end -= timedelta(days=10)


def test_request_records_are_kept_in_memory_only_when_asked(tmp_path) -> None:
    record = RequestRecord(
        received=1.0, answered=2.0, client_id=1, req_id=1, kind="historical", outcome="bars", bars=3
    )
    path = tmp_path / "log.jsonl"
    log = RequestLog(path)
    for _ in range(3):
        log.add(record)
    log.close()
    assert log._records == []  # the growth guarded against
    with pytest.raises(RuntimeError, match="keep_requests"):
        log.records()
    assert read_log(path) == [record] * 3
    kept = RequestLog(keep=True)
    kept.add(record)
    assert kept.records() == [record]


def test_simulator_keeps_no_records_by_default(tmp_path, connect) -> None:
    path = tmp_path / "requests.jsonl"
    with SimGateway(SimConfig(port=0, log_path=path)) as sim:
        ib = connect(sim)
        assert ib.reqHistoricalData(crypto(), DAY_END, "3600 S", "1 min", "AGGTRADES", False, 2)
        ib.disconnect()
        with pytest.raises(RuntimeError):
            sim.requests()
    assert [r.kind for r in read_log(path)] == ["connect", "historical"]
