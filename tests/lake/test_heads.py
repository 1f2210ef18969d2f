"""The heads a run records in the lake: pure decisions, and the file on a real disk."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

from backfill.domain import UTC, Symbol
from backfill.lake.heads import (
    Head,
    heads_path,
    heads_to_ask,
    listing_days,
    read_heads,
    record_heads,
)

SOL, BTC, ETH = Symbol("SOL", "USD"), Symbol("BTC", "USD"), Symbol("ETH", "USD")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def head(day: date, asked_days_ago: float = 0.0) -> Head:
    return Head(
        datetime(day.year, day.month, day.day, tzinfo=UTC), NOW - timedelta(days=asked_days_ago)
    )


def test_a_symbol_without_a_recorded_head_is_asked_once():
    recorded = {SOL: head(date(2020, 9, 1))}
    assert heads_to_ask(
        recorded, [BTC, SOL, BTC, ETH], date(1990, 1, 1), now=NOW, max_age_days=30
    ) == [BTC, ETH]


def test_an_old_head_is_asked_again_only_when_the_range_starts_before_it():
    recorded = {SOL: head(date(2020, 9, 1), asked_days_ago=31)}
    asked = dict(now=NOW, max_age_days=30)
    assert heads_to_ask(recorded, [SOL], date(1990, 1, 1), **asked) == [SOL]
    assert heads_to_ask(recorded, [SOL], date(2020, 9, 1), **asked) == []
    fresh = {SOL: head(date(2020, 9, 1), asked_days_ago=29)}
    assert heads_to_ask(fresh, [SOL], date(1990, 1, 1), **asked) == []


def test_a_contradicted_head_is_asked_again_however_fresh():
    fresh = {SOL: head(date(2020, 9, 10), asked_days_ago=0)}
    asked = dict(now=NOW, max_age_days=30)
    assert heads_to_ask(fresh, [], date(2020, 9, 1), contradicted=[SOL], **asked) == [SOL]
    assert heads_to_ask(fresh, [SOL], date(2020, 9, 1), **asked) == []


def test_the_listing_day_is_the_heads_utc_day():
    late = Head(datetime(2020, 8, 31, 23, 30, tzinfo=timezone(timedelta(hours=-1))), NOW)
    assert listing_days({SOL: late}) == {SOL: date(2020, 9, 1)}


def test_heads_are_recorded_merged_and_read_back(tmp_path):
    lake = tmp_path / "lake"
    assert read_heads(lake) == {}
    record_heads(lake, {SOL: head(date(2020, 9, 1))})
    record_heads(lake, {BTC: head(date(2017, 1, 1))})
    assert read_heads(lake) == {SOL: head(date(2020, 9, 1)), BTC: head(date(2017, 1, 1))}
    path = heads_path(lake)
    assert path.parent.name.startswith("_"), "readers of the lake skip it"
    assert sorted(p.name for p in path.parent.iterdir()) == [".heads.json.lock", "heads.json"]
    assert set(json.loads(path.read_text())["heads"]) == {"BTC-USD", "SOL-USD"}


def test_an_unreadable_record_is_an_empty_one_and_is_replaced(tmp_path):
    path = heads_path(tmp_path)
    path.parent.mkdir(parents=True)
    for junk in ("{not json", '{"heads": {"SOL-USD": {"head": 5}}}', "[]"):
        path.write_text(junk)
        assert read_heads(tmp_path) == {}
    record_heads(tmp_path, {SOL: head(date(2020, 9, 1))})
    assert read_heads(tmp_path) == {SOL: head(date(2020, 9, 1))}
