"""``--header-format`` and ``--header-shift-s`` (issue 18): the served window's header in each
rendering real gateways write, and ``formatDate=1`` bar times, through the real client."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from backfill.sim import NO_PACING, Behaviour, HeaderFormat, bars_between
from tests.sim.helpers import UTC, crypto

pytestmark = pytest.mark.ib  # exercises the IB client: run under both (.ci/run)

END = datetime(2024, 3, 2, tzinfo=UTC)  # 2024-03-01 19:00 EST, 2024-03-02 08:00 HKT
NY = "America/New_York"
HK = "Asia/Hong_Kong"

# Written out by hand, not by the simulator's code: the header of "86400 S" ending at END.
EXPECTED = {
    ("login", "UTC"): ("20240301  00:00:00", "20240302  00:00:00"),
    ("login", NY): ("20240229  19:00:00", "20240301  19:00:00"),
    ("login", HK): ("20240301  08:00:00", "20240302  08:00:00"),
    ("named", "UTC"): ("20240301 00:00:00 UTC", "20240302 00:00:00 UTC"),
    ("named", NY): (f"20240229 19:00:00 {NY}", f"20240301 19:00:00 {NY}"),
    ("named", HK): (f"20240301 08:00:00 {HK}", f"20240302 08:00:00 {HK}"),
    ("utc-dash", "UTC"): ("20240301-00:00:00", "20240302-00:00:00"),
    ("utc-dash", NY): ("20240301-00:00:00", "20240302-00:00:00"),
    ("utc-dash", HK): ("20240301-00:00:00", "20240302-00:00:00"),
    ("dashed", "UTC"): ("2024-03-01 00:00:00.0 UTC", "2024-03-02 00:00:00.0 UTC"),
    ("dashed", NY): (f"2024-02-29 19:00:00.0 {NY}", f"2024-03-01 19:00:00.0 {NY}"),
    ("dashed", HK): (f"2024-03-01 08:00:00.0 {HK}", f"2024-03-02 08:00:00.0 {HK}"),
    ("utc-bare", "UTC"): ("20240301 00:00:00", "20240302 00:00:00"),
    ("utc-bare", NY): ("20240301 00:00:00", "20240302 00:00:00"),
    ("utc-bare", HK): ("20240301 00:00:00", "20240302 00:00:00"),
    ("epoch", "UTC"): ("1709251200", "1709337600"),
    ("epoch", NY): ("1709251200", "1709337600"),
    ("epoch", HK): ("1709251200", "1709337600"),
}


def headers(ib) -> list[tuple[str, str]]:
    """The (start, end) header of every historical answer (ib_insync drops them)."""
    seen: list[tuple[str, str]] = []
    original = ib.wrapper.historicalDataEnd

    def spy(req_id: int, start: str, end: str) -> None:
        seen.append((start, end))
        original(req_id, start, end)

    ib.wrapper.historicalDataEnd = spy
    return seen


def gateway(make_sim, zone: str = "UTC", **switches):
    return make_sim(behaviour=Behaviour(**switches), timezone=zone, pacing=NO_PACING)


def fetch(ib, end=END, duration: str = "86400 S", fmt: int = 2):
    return ib.reqHistoricalData(crypto(), end, duration, "1 min", "AGGTRADES", False, fmt)


@pytest.mark.parametrize(("form", "zone"), sorted(EXPECTED))
def test_header_in_each_format_and_login_zone(make_sim, connect, form, zone) -> None:
    ib = connect(gateway(make_sim, zone, header_format=form))
    seen = headers(ib)
    bars = fetch(ib)
    assert seen == [EXPECTED[form, zone]]
    # The rendering changes the header only: the bars are the oracle's.
    oracle = bars_between(0, "BTC", END - timedelta(days=1), END)
    assert [(b.date, b.close) for b in bars] == [(o.start, o.close) for o in oracle]


def test_default_is_named_with_the_login_zone() -> None:
    assert Behaviour().header_format is HeaderFormat.NAMED


def test_header_across_a_dst_change_keeps_each_end_in_its_own_offset(make_sim, connect) -> None:
    # New York moved to EDT at 2024-03-10 07:00 UTC: the two ends are 4 and 5 hours behind.
    ib = connect(gateway(make_sim, NY))
    seen = headers(ib)
    assert fetch(ib, datetime(2024, 3, 11, tzinfo=UTC), "2 D")
    assert seen == [(f"20240308 19:00:00 {NY}", f"20240310 20:00:00 {NY}")]


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("dashed", ("2024-03-01 00:00:00.0 UTC", "2024-03-01 12:30:30.0 UTC")),
        ("epoch", ("1709251200", "1709296230")),
    ],
)
def test_a_header_end_in_the_future_is_now_truncated_to_the_second(
    make_sim, connect, form, expected
) -> None:
    now = datetime(2024, 3, 1, 12, 30, 30, 900000, tzinfo=UTC)
    sim = make_sim(behaviour=Behaviour(header_format=form), clock=now.timestamp, pacing=NO_PACING)
    ib = connect(sim)
    seen = headers(ib)
    assert fetch(ib, END)
    assert seen == [expected]


@pytest.mark.parametrize(
    ("form", "lie"),
    [
        ("named", (f"20240229 20:00:00 {NY}", f"20240301 20:00:00 {NY}")),
        ("utc-dash", ("20240301-01:00:00", "20240302-01:00:00")),
        ("epoch", ("1709254800", "1709341200")),
    ],
)
def test_a_lying_header_is_shifted_and_the_bars_are_not(make_sim, connect, form, lie) -> None:
    honest = connect(gateway(make_sim, NY, header_format=form), client_id=1)
    lying = connect(gateway(make_sim, NY, header_format=form, header_shift_s=3600), client_id=2)
    told, lied = headers(honest), headers(lying)
    assert list(fetch(honest)) == list(fetch(lying))
    assert told == [EXPECTED[form, NY]] and lied == [lie]


# --- formatDate=1 bar times --------------------------------------------------------------
@pytest.mark.parametrize("form", ["named", "utc-dash", "dashed", "utc-bare", "epoch"])
def test_format_date_1_names_the_login_zone(make_sim, connect, form) -> None:
    ib = connect(gateway(make_sim, NY, header_format=form))
    bars = fetch(ib, datetime(2024, 3, 1, 15, tzinfo=UTC), "3600 S", fmt=1)
    oracle = bars_between(
        0, "BTC", datetime(2024, 3, 1, 14, tzinfo=UTC), datetime(2024, 3, 1, 15, tzinfo=UTC)
    )
    # Either client (ib_insync, ib_async) reads "20240301 09:00:00 America/New_York" as an
    # aware time in that zone.
    assert [b.date for b in bars] == [o.start.astimezone(ZoneInfo(NY)) for o in oracle]
    assert all(b.date.tzinfo == ZoneInfo(NY) for b in bars)
    assert bars[0].date.utcoffset() == timedelta(hours=-5)


def test_format_date_1_under_login_is_the_old_zone_less_wall_clock(make_sim, connect) -> None:
    ib = connect(gateway(make_sim, NY, header_format="login"))
    bars = fetch(ib, datetime(2024, 3, 1, 15, tzinfo=UTC), "3600 S", fmt=1)
    assert bars and all(b.date.tzinfo is None for b in bars)
    assert bars[0].date == datetime(2024, 3, 1, 9)


def test_format_date_1_follows_a_header_format_changed_at_runtime(make_sim, connect) -> None:
    sim = gateway(make_sim, NY, header_format="login")
    ib = connect(sim)
    end = datetime(2024, 3, 1, 15, tzinfo=UTC)
    assert fetch(ib, end, "3600 S", fmt=1)[0].date.tzinfo is None
    sim.set_behaviour(Behaviour(header_format="named"))
    assert fetch(ib, end, "3600 S", fmt=1)[0].date.tzinfo == ZoneInfo(NY)


def test_head_timestamp_with_format_date_1_names_the_zone(make_sim, connect) -> None:
    ib = connect(gateway(make_sim, NY))
    first = ib.reqHeadTimeStamp(crypto(), "AGGTRADES", useRTH=False, formatDate=1)
    epoch = ib.reqHeadTimeStamp(crypto(), "AGGTRADES", useRTH=False, formatDate=2)
    assert first.tzinfo == ZoneInfo(NY) and first == epoch
