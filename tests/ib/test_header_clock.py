"""Issue 18: the served-window header in every rendering, and its clock learned from the
asked windows (pure)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from backfill.domain import Window
from backfill.edges import UNKNOWN, EdgeRule, Request, asked_span, request_for
from backfill.ib.served import (
    AskedHeader,
    HeaderClock,
    learn_clock,
    login_zone,
    parse_served,
    parse_served_time,
    read_header_time,
    split_header_time,
    zone_named,
)

UTC = timezone.utc
NY = zone_named("America/New_York")
HK = zone_named("Asia/Hong_Kong")
# 2025-07-14 12:59:54 UTC: 08:59:54 in New York (EDT), 20:59:54 in Hong Kong.
WHEN = datetime(2025, 7, 14, 12, 59, 54, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "form", "zone", "expected"),
    [
        ("20250714  08:59:54", "login", NY, WHEN),  # two spaces, no zone: the given zone
        ("20250714 08:59:54 US/Eastern", "named", None, WHEN),  # a zone name rules
        ("20250714 20:59:54 Asia/Hong_Kong", "named", NY, WHEN),  # ... even over the login zone
        ("20250714-12:59:54", "utc-dash", NY, WHEN),  # UTC, whatever the login zone
        ("2025-07-14 12:59:54", "dashed", UTC, WHEN),
        ("2025-07-14 12:59:54.0", "dashed", UTC, WHEN),
        ("2025-07-14 08:59:54.0 America/New_York", "dashed", UTC, WHEN),
        ("2025-07-14 08:59:54 US/Eastern", "dashed", None, WHEN),
        ("20250714 12:59:54", "utc-bare", UTC, WHEN),  # zone-less: read in the given zone
        ("20250714 08:59:54", "utc-bare", NY, WHEN),
        ("1752497994", "epoch", None, WHEN),
    ],
)
def test_every_rendering_is_read(text, form, zone, expected):
    assert split_header_time(text).format == form
    assert parse_served_time(text, zone) == expected


def test_a_fractional_second_is_kept_and_a_zone_less_time_needs_a_zone():
    assert parse_served_time("2025-07-14 12:59:54.25", UTC) == WHEN + timedelta(
        microseconds=250_000
    )
    assert parse_served_time("20250714-12:59:54.5", None) == WHEN + timedelta(microseconds=500_000)
    for zoneless in ("20250714  08:59:54", "20250714 12:59:54", "2025-07-14 12:59:54.0"):
        assert parse_served_time(zoneless, None) is None
    for garbage in (
        "",
        "2025-07-14",
        "20250714 25:00:00",
        "20250714 12:59:54 Mars Time",
        "2025-13-01 00:00:00",
        "tomorrow",
    ):
        assert parse_served_time(garbage, UTC) is None


def test_dst_edges_in_new_york():
    # Spring forward, 2025-03-09: 02:00-02:59 never happened in New York.
    assert read_header_time("20250309  02:30:00", NY) == []
    assert parse_served_time("20250309  01:59:00", NY) == datetime(2025, 3, 9, 6, 59, tzinfo=UTC)
    assert parse_served_time("20250309  03:00:00", NY) == datetime(2025, 3, 9, 7, tzinfo=UTC)
    # Fall back, 2025-11-02: 01:00-01:59 happened twice (EDT, then EST).
    twice = read_header_time("20251102  01:30:00", NY)
    assert twice == [
        datetime(2025, 11, 2, 5, 30, tzinfo=UTC),
        datetime(2025, 11, 2, 6, 30, tzinfo=UTC),
    ]
    # A window's start is read late and its end early: never wider than served.
    served = parse_served("20251102  01:30:00", "20251102  02:30:00", NY)
    assert served is not None
    assert served.start == datetime(2025, 11, 2, 6, 30, tzinfo=UTC)
    assert served.end == datetime(2025, 11, 2, 7, 30, tzinfo=UTC)
    # Both ends in the repeated hour: read narrow, 01:30 to 01:45 is no window at all.
    assert parse_served("20251102  01:30:00", "20251102  01:45:00", NY) is None
    assert parse_served("20251101  01:30:00", "20251102  01:45:00", NY).end == datetime(
        2025, 11, 2, 5, 45, tzinfo=UTC
    )
    # A zone NAME in the text is read through the same rules.
    assert read_header_time("20250309 02:30:00 US/Eastern", None) == []


def asked(end: datetime, seconds: int, form, zone=UTC, shift: int = 0) -> AskedHeader:
    """What a gateway writing ``form`` in login zone ``zone`` answers for the window."""
    start = end - timedelta(seconds=seconds)

    def write(when: datetime) -> str:
        when = when + timedelta(seconds=shift)
        wall = when.astimezone(zone)
        return {
            "login": wall.strftime("%Y%m%d  %H:%M:%S"),
            "named": wall.strftime("%Y%m%d %H:%M:%S ") + getattr(zone, "key", "UTC"),
            "utc-dash": when.astimezone(UTC).strftime("%Y%m%d-%H:%M:%S"),
            "dashed": wall.strftime("%Y-%m-%d %H:%M:%S.0 ") + getattr(zone, "key", "UTC"),
            "utc-bare": when.astimezone(UTC).strftime("%Y%m%d %H:%M:%S"),
            "epoch": str(int(when.timestamp())),
        }[form]

    return AskedHeader(start, end, write(start), write(end))


END = datetime(2025, 7, 13, 12, 0, tzinfo=UTC)
LOGIN = {
    "UTC": "20250714 08:00:00 UTC",
    "NY": "20250714 08:00:00 America/New_York",
    "HK": "20250714 08:00:00 Asia/Hong_Kong",
}
ZONES = {"UTC": UTC, "NY": NY, "HK": HK}


@pytest.mark.parametrize("where", ["UTC", "NY", "HK"])
@pytest.mark.parametrize(
    ("form", "reading"),
    [
        ("login", "login"),
        ("named", "written"),
        ("utc-dash", "written"),
        ("dashed", "written"),
        ("utc-bare", "utc"),
        ("epoch", "written"),
    ],
)
def test_the_clock_is_learned_from_the_asked_windows(where, form, reading):
    login = login_zone(LOGIN[where])
    answers = [
        asked(END, 1800, form, ZONES[where]),
        asked(END - timedelta(minutes=7), 600, form, ZONES[where]),
    ]
    clock = learn_clock(answers, login)
    # In UTC, a zone-less header reads the same either way: UTC.
    expected = "utc" if where == "UTC" and reading == "login" else reading
    assert clock.reading == expected and clock.format == form and clock.trusted
    # Read by that clock, each answer's header is its asked window.
    for answer in answers:
        served = clock.read(answer.header_start, answer.header_end, login)
        assert (served.start, served.end) == (answer.start, answer.end)


@pytest.mark.parametrize("form", ["login", "named", "utc-dash", "dashed", "utc-bare", "epoch"])
def test_a_header_shifted_by_an_hour_is_untrusted(form):
    login = login_zone(LOGIN["NY"])
    clock = learn_clock([asked(END, 1800, form, NY, shift=3600)], login)
    assert clock.reading == "untrusted" and not clock.trusted
    assert "neither" in clock.note
    honest = asked(END, 1800, form, NY)
    assert clock.read(honest.header_start, honest.header_end, login) is None


def test_no_header_or_an_unknown_login_zone():
    assert learn_clock([], login_zone(LOGIN["UTC"])).reading == "untrusted"
    mars = login_zone("20250714 08:00:00 Mars Standard Time")
    assert mars.zone is None and not mars.missing
    # A zone-less header that matches in UTC is UTC; the login zone is not needed.
    assert learn_clock([asked(END, 1800, "utc-bare")], mars).reading == "utc"
    assert learn_clock([asked(END, 1800, "login", NY)], mars).reading == "untrusted"
    # London in winter: UTC and the login zone agree on these dates, not in summer.
    london = login_zone("20250114 08:00:00 Europe/London")
    winter = datetime(2025, 1, 13, 12, tzinfo=UTC)
    assert learn_clock([asked(winter, 1800, "login", london.zone)], london).reading == "untrusted"


def test_an_untrusted_header_asks_seconds_and_takes_the_asked_window():
    day = Window(datetime(2025, 7, 1).date(), datetime(2025, 7, 1).date())
    for rule, duration in (
        ("[)", "86400 S"),
        ("[]", "86400 S"),
        ("(]", "86400 S"),
        ("()", "86460 S"),
    ):
        request = request_for(day, EdgeRule.parse(rule), in_seconds=True)
        assert request.duration == duration
    assert request_for(day, UNKNOWN, in_seconds=True).duration == "86460 S"
    assert request_for(day, EdgeRule.parse("[)")).duration == "86400 S"
    week = Window(datetime(2025, 7, 1).date(), datetime(2025, 7, 7).date())
    assert request_for(week, EdgeRule.parse("[)")).duration == "7 D"
    end = datetime(2025, 7, 1, 23, 59, tzinfo=UTC)
    assert asked_span(Request(end, "86460 S")) == (end - timedelta(seconds=86460), end)
    assert asked_span(Request(end, "7 D")) is None


def test_a_login_zone_without_a_zone_database_is_an_error_naming_tzdata(tmp_path):
    """Python's zoneinfo pointed at an empty folder (as on Windows without tzdata): an IANA
    name is a one-line error naming what to install; an unknown name stays unknown."""
    code = (
        "import sys\n"
        "sys.modules['tzdata'] = None  # not installed (zoneinfo falls back to it)\n"
        "from backfill.ib.served import AskedHeader, learn_clock, login_zone\n"
        "from backfill.ib.served import ZoneDatabaseMissing, zone_named\n"
        "ny = login_zone('20250714 08:00:00 America/New_York')\n"
        "assert ny.zone is None and 'pip install tzdata' in ny.missing, ny\n"
        "assert login_zone('20250714 08:00:00 EST').missing\n"
        "assert not login_zone('20250714 08:00:00 Mars Standard Time').missing\n"
        "assert login_zone('20250714 08:00:00 UTC').zone is not None\n"
        "try:\n"
        "    learn_clock([], ny)\n"
        "    raise AssertionError('no error')\n"
        "except ZoneDatabaseMissing as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "PYTHONTZPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert "\n" not in line and "pip install tzdata" in line and "America/New_York" in line


def test_clocks_are_checked():
    with pytest.raises(ValueError):
        HeaderClock("sometimes")
