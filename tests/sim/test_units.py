"""Pure parts of the simulator: wire format, pacing rules, fault config."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

import pytest

from backfill.sim import protocol as p
from backfill.sim.config import SimConfig
from backfill.sim.faults import FaultConfig
from backfill.sim.pacing import PacingConfig, PacingRules, RequestKey, Rule
from tests.sim.helpers import UTC

NOW = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20240301 23:59:00 UTC", datetime(2024, 3, 1, 23, 59, tzinfo=UTC)),
        ("20240301-23:59:00", datetime(2024, 3, 1, 23, 59, tzinfo=UTC)),
        ("20240301 23:59:00 US/Eastern", datetime(2024, 3, 2, 4, 59, tzinfo=UTC)),
        ("20240301 23:59:00", datetime(2024, 3, 1, 23, 59, tzinfo=UTC)),
        ("", NOW),
    ],
)
def test_end_datetime(text: str, expected: datetime) -> None:
    assert p.parse_end_datetime(text, NOW) == expected


@pytest.mark.parametrize(
    "text", ["2024-03-01", "20240301 25:00:00 UTC", "x y z w", "20240301 10:00:00 Mars/Base"]
)
def test_bad_end_datetime(text: str) -> None:
    with pytest.raises(p.ProtocolError):
        p.parse_end_datetime(text, NOW)


def test_durations_and_bar_sizes() -> None:
    assert p.parse_duration("86400 S") == timedelta(days=1)
    assert p.parse_duration("2 D") == timedelta(days=2)
    assert p.parse_duration("1 W") == timedelta(days=7)
    for bad in ("1 M", "1 Y", "0 D", "D", "1.5 D"):
        with pytest.raises(p.ProtocolError):
            p.parse_duration(bad)
    assert p.parse_bar_size("1 min") == 60
    with pytest.raises(p.ProtocolError):
        p.parse_bar_size("1 mins")


def test_framing_round_trip() -> None:
    data = p.frame([17, "a", 1.5, ""])
    assert p.HEADER.unpack(data[:4])[0] == len(data) - 4
    assert p.split_fields(data[4:]) == ["17", "a", "1.5", ""]
    assert p.parse_version_range("v157..176 +PACEAPI") == (157, 176)


_serial = itertools.count()


def key(contract: str = "BTC", identity: str | None = None, bar: int = 60) -> RequestKey:
    return RequestKey(contract, identity or f"{contract}-{next(_serial)}", bar)


def test_rules_with_injected_clock() -> None:
    rules = PacingRules(PacingConfig(soft_rate=None, max_rate=None))
    assert rules.check(0.0, key(identity="same")).allowed
    assert rules.check(14.9, key(identity="same")).rule is Rule.IDENTICAL
    assert rules.check(15.1, key(identity="same")).allowed
    rules = PacingRules(PacingConfig(soft_rate=None, max_rate=None))
    for i in range(5):
        assert rules.check(i * 0.1, key()).allowed
    assert rules.check(0.5, key()).rule is Rule.CONTRACT
    assert rules.check(0.5, key("ETH")).allowed
    assert rules.check(2.05, key()).allowed  # the first one left the 2-second window


def test_session_rule_scope() -> None:
    config = PacingConfig(session_max=3, soft_rate=None, max_rate=None)
    rules = PacingRules(config)
    for i in range(3):
        assert rules.check(i * 3.0, key(f"S{i}", bar=30)).allowed
    assert rules.check(10.0, key("X", bar=60)).allowed  # 1-minute bars: not this rule
    assert rules.check(11.0, key("Y", bar=30)).rule is Rule.SESSION
    assert rules.check(611.0, key("Y", bar=30)).allowed
    strict = PacingRules(PacingConfig(session_max=1, strict=True, soft_rate=None, max_rate=None))
    assert strict.check(0.0, key("A")).allowed
    assert strict.check(1.0, key("B")).rule is Rule.SESSION


def test_soft_throttle_and_ceiling() -> None:
    rules = PacingRules(PacingConfig(soft_rate=2.0, soft_burst=2, max_rate=None))
    delays = [rules.check(0.0, key(f"S{i}")).delay_s for i in range(5)]
    assert delays == [0.0, 0.0, 0.5, 1.0, 1.5]
    rules = PacingRules(PacingConfig(soft_rate=None, max_rate=0.5, rate_window_s=4))
    assert rules.check(0.0, key("A")).allowed and rules.check(1.0, key("B")).allowed
    assert rules.check(2.0, key("C")).rule is Rule.MAX_RATE
    assert rules.check(4.5, key("C")).allowed


def test_disabled_pacing_allows_all() -> None:
    rules = PacingRules(PacingConfig(enabled=False))
    assert all(rules.check(0.0, key(identity="same")).allowed for _ in range(100))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        FaultConfig(latency_ms=(10, 5))
    with pytest.raises(ValueError):
        FaultConfig(hang_share=1.5)
    with pytest.raises(ValueError):
        SimConfig(no_trade_share=1.0)
    with pytest.raises(ValueError):
        PacingConfig(contract_max=0)
    assert SimConfig(symbols=("btc", " eth")).symbols == ("BTC", "ETH")
