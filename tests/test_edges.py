"""Window edges (pure): the request each rule needs, and which days an answer covers."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from backfill.domain import MINUTE, Window
from backfill.edges import (
    RULES,
    UNKNOWN,
    EdgeRule,
    covered_days,
    first_start,
    last_start,
    probe_pair,
    request_for,
    rule_from,
)

UTC = timezone.utc
JULY_1 = date(2025, 7, 1)
LONG_AGO = datetime(2030, 1, 1, tzinfo=UTC)


def parse_duration(text: str) -> timedelta:
    n, unit = text.split()
    return timedelta(seconds=int(n)) if unit == "S" else timedelta(days=int(n))


def served_starts(end: datetime, length: timedelta, rule: str) -> set[datetime]:
    """Bar starts a gateway with ``rule`` serves (every minute has a bar)."""
    start = end - length
    minute = start.replace(second=0)
    out = set()
    while minute <= end:
        if (
            start < minute < end
            or (minute == start and rule[0] == "[")
            or (minute == end and rule[1] == "]")
        ):
            out.add(minute)
        minute += MINUTE
    return out


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("days", [1, 3])
def test_each_rules_request_serves_every_bar_of_the_days(rule, days):
    window = Window(JULY_1, JULY_1 + timedelta(days=days - 1))
    request = request_for(window, EdgeRule.parse(rule))
    got = served_starts(request.end, parse_duration(request.duration), rule)
    need = {first_start(window) + n * MINUTE for n in range(days * 1440)}
    assert need <= got
    assert last_start(window) == datetime(2025, 7, days, 23, 58, tzinfo=UTC)


@pytest.mark.parametrize("rule", RULES)
def test_a_rule_not_learned_is_asked_so_that_any_rule_serves_the_days(rule):
    window = Window(JULY_1, date(2025, 7, 2))
    request = request_for(window, UNKNOWN)
    assert request.duration == f"{2 * 86400 + 60} S"
    got = served_starts(request.end, parse_duration(request.duration), rule)
    assert {first_start(window) + n * MINUTE for n in range(2 * 1440)} <= got


def test_the_default_rule_asks_as_before():
    request = request_for(Window.single(JULY_1), EdgeRule.parse("[)"))
    assert (request.end, request.duration) == (datetime(2025, 7, 1, 23, 59, tzinfo=UTC), "86400 S")
    assert request_for(Window(JULY_1, date(2025, 7, 7)), EdgeRule.parse("[)")).duration == "7 D"


def test_a_day_counts_only_when_the_served_window_covers_it_under_the_rule():
    window = Window(JULY_1, date(2025, 7, 3))
    start = datetime(2025, 6, 30, 23, 59, tzinfo=UTC)  # the first day's first bar start
    end = datetime(2025, 7, 3, 23, 59, tzinfo=UTC)
    closed = EdgeRule.parse("[)")
    assert covered_days(window, closed, start, end, LONG_AGO) == window.days
    # The first bar start served only if the rule serves that end.
    assert covered_days(window, EdgeRule.parse("(]"), start, end, LONG_AGO) == window.days[1:]
    assert covered_days(window, UNKNOWN, start, end, LONG_AGO) == window.days[1:]
    # "3 D" served as two days: the first day is outside, asked again.
    later = start + timedelta(days=1)
    assert covered_days(window, closed, later, end, LONG_AGO) == window.days[1:]
    # An end short of the last day's last bar.
    assert covered_days(window, closed, start, end - 2 * MINUTE, LONG_AGO) == window.days[:2]
    assert covered_days(window, closed, None, end, LONG_AGO) == []


def test_a_day_still_running_needs_only_its_ended_minutes():
    window = Window.single(JULY_1)
    start = datetime(2025, 6, 30, 23, 59, tzinfo=UTC)
    asked = datetime(2025, 7, 1, 12, 30, 20, tzinfo=UTC)
    served_to_now = datetime(2025, 7, 1, 12, 30, tzinfo=UTC)
    assert covered_days(window, EdgeRule.parse("[)"), start, served_to_now, asked) == [JULY_1]
    assert (
        covered_days(window, EdgeRule.parse("[)"), start, served_to_now - 5 * MINUTE, asked) == []
    )


def test_the_probe_pair_and_the_rule_it_shows():
    end = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)
    starts = [end - n * MINUTE for n in range(30, -1, -1) if n != 20]
    a, b = probe_pair(starts, end - 30 * MINUTE, end, 10 * MINUTE)
    assert end - 30 * MINUTE < a and b < end and b - a == 10 * MINUTE
    assert a != end - 20 * MINUTE and b != end - 20 * MINUTE
    inside = [a + n * MINUTE for n in range(1, 10)]
    assert str(rule_from(a, b, [a, *inside])) == "[)"
    assert str(rule_from(a, b, [*inside, b])) == "(]"
    assert str(rule_from(a, b, [a, *inside, b])) == "[]"
    assert str(rule_from(a, b, inside)) == "()"
    assert probe_pair([end - MINUTE], end - 30 * MINUTE, end, 10 * MINUTE) is None
