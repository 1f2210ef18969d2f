"""What the probe's findings change in run's and plan's settings (pure, and the lake file)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from backfill.findings import apply_findings
from backfill.lake.gateway import read_findings, write_finding
from backfill.settings import RunSettings

NOW = datetime(2026, 1, 10, 12, tzinfo=timezone.utc)


def lake_with(tmp_path: Path, age: timedelta) -> Path:
    for key, value in (
        ("latency_s", {"1": 0.6, "2": 0.7, "4": 0.9}),
        ("max_window_days", 3),
        ("window_edges", "(]"),
    ):
        write_finding(tmp_path, "gw", 4002, key, value, {}, NOW - age)
    return tmp_path


def test_fresh_findings_set_plans_latency_and_clip_the_window(tmp_path: Path) -> None:
    found = read_findings(lake_with(tmp_path, timedelta(days=6)), "gw", 4002, NOW)
    applied = apply_findings(RunSettings(window_days=7), found, command="plan")
    assert applied.settings.latency_s == 0.6 and applied.settings.window_days == 3
    assert applied.used == ("max_window_days", "latency_s")
    assert "base latency 0.600s for the ETA" in applied.line
    given = apply_findings(
        RunSettings(window_days=2, latency_s=0.3), found, command="plan", latency_given=True
    )
    assert given.settings.latency_s == 0.3 and given.settings.window_days == 2  # never raised


def test_run_auto_seeds_the_base_latency_not_the_rate(tmp_path: Path) -> None:
    found = read_findings(lake_with(tmp_path, timedelta(hours=1)), "gw", 4002, NOW)
    applied = apply_findings(RunSettings(rate_auto=True), found, command="run")
    assert applied.settings.base_latency_hint_s == 0.6 and applied.settings.rate == 0.7
    assert applied.settings.congestion().base_hint_s == 0.6
    assert "--rate auto starts at 0.7 req/s" in applied.line
    fixed = apply_findings(RunSettings(), found, command="run")
    assert fixed.settings.base_latency_hint_s is None
    longer = apply_findings(RunSettings(rate_auto=True, window_days=2), found, command="run")
    assert longer.settings.base_latency_hint_s is None  # measured on 1-day windows only


def test_stale_findings_are_ignored_and_named(tmp_path: Path) -> None:
    found = read_findings(lake_with(tmp_path, timedelta(days=8)), "gw", 4002, NOW)
    assert found is not None and not found.fresh
    applied = apply_findings(RunSettings(window_days=7), found, command="plan")
    assert applied.settings == RunSettings(window_days=7) and applied.used == ()
    assert "stale, run backfill probe again" in applied.line
    shorter = read_findings(
        tmp_path, "gw", 4002, NOW, RunSettings(finding_max_age_days=9).finding_max_age
    )
    assert shorter is not None and set(shorter.fresh) == {
        "latency_s",
        "max_window_days",
        "window_edges",
    }
