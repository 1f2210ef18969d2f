"""A head in ``_gateway/heads.json`` later than the real first bar (edited, or IB wrong):
``run`` and ``plan`` say how many days they leave out as before listing, and from what head;
a head contradicted by days the lake already holds is asked again."""

from __future__ import annotations

import json
import subprocess
from datetime import date, datetime

import pytest

from backfill.domain import UTC, Symbol
from backfill.lake.heads import Head, read_heads, record_heads
from tests.lake.helpers import read_coverage
from tests.run.conftest import backfill, run_backfill

pytestmark = pytest.mark.e2e

SOL = Symbol("SOL", "USD")  # lists on 2020-09-01 in the simulator


def _tamper(lake, day: date) -> None:
    record_heads(
        lake, {SOL: Head(datetime(day.year, day.month, day.day, tzinfo=UTC), datetime.now(UTC))}
    )


def heads_asked(sim) -> int:
    return len([r for r in sim.requests() if r.kind == "head_timestamp"])


def test_days_left_out_as_before_listing_are_said_by_run_and_plan(sim, lake):
    _tamper(lake, date(2020, 9, 10))
    text = run_backfill(sim, lake, ["SOL-USD"], "2020-09-01", "2020-09-12", "--rate", "50")
    assert text.returncode == 0, text.stdout[-2000:] + text.stderr
    assert (
        "SOL-USD 9 days of the range left out as before listing (head 2020-09-10" in text.stdout
    ), text.stdout[-2000:]
    assert "heads.json" in text.stdout
    as_json = run_backfill(
        sim, lake, ["SOL-USD"], "2020-09-01", "2020-09-12", "--rate", "50", "--json"
    )
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    [told] = [e for e in events if e["event"] == "before_listing"]
    assert (told["symbol"], told["days"]) == ("SOL-USD", 9)
    assert told["head"].startswith("2020-09-10")
    plan = subprocess.run(
        backfill(
            "plan",
            "--lake",
            str(lake),
            "--symbols",
            "SOL-USD",
            "--from",
            "2020-09-01",
            "--to",
            "2020-09-12",
            "--json",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    [sol] = json.loads(plan.stdout)["symbols"]
    assert (sol["days_before_listing"], sol["head"]) == (9, "2020-09-10")
    lines = subprocess.run(
        backfill(
            "plan",
            "--lake",
            str(lake),
            "--symbols",
            "SOL-USD",
            "--from",
            "2020-09-01",
            "--to",
            "2020-09-12",
        ),
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "before listing 9 (head 2020-09-10)" in lines, lines
    assert "heads were recorded in" in lines


def test_a_head_later_than_days_the_lake_holds_is_asked_again(sim, lake):
    done = run_backfill(sim, lake, ["SOL-USD"], "2020-09-01", "2020-09-02", "--rate", "50")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr
    assert heads_asked(sim) == 1
    _tamper(lake, date(2020, 9, 5))  # the lake holds 1 and 2 September: a contradiction
    again = run_backfill(sim, lake, ["SOL-USD"], "2020-09-01", "2020-09-06", "--rate", "50")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr
    assert heads_asked(sim) == 2
    assert read_heads(lake)[SOL].day == date(2020, 9, 1)
    held = read_coverage(lake, [SOL], date(2020, 9, 1), date(2020, 9, 6))[SOL]
    assert {date(2020, 9, d) for d in range(1, 7)} <= set(held), sorted(held)
