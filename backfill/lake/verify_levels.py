"""``verify``'s checks of levels and B&R event parts: schema, key unique and sorted, windows
as the profile's rule gives them, ``available_from_utc``, event order, and provenance
against the M1 footers (stale: a warning naming the command that refreshes the part)."""

from __future__ import annotations

import itertools
import shlex
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pyarrow as pa

from backfill.aggregate.build import read_m1_coverage
from backfill.domain import Month, Symbol
from backfill.lake.verify_aggregates import read_derived_part
from backfill.lake.verify_findings import Finding, Kind, Severity
from backfill.levels.build import EVENTS, LEVELS
from backfill.levels.compute import session_windows
from backfill.levels.paths import (
    event_tolerances,
    events_symbol_dir,
    iter_month_parts,
    levels_symbol_dir,
)
from backfill.levels.profiles import PROFILES, Profile, parse_scan
from backfill.levels.provenance import Provenance, source_days, source_of
from backfill.levels.tables import (
    EVENTS_SCHEMA,
    LEVEL_ORDER,
    LEVELS_PROVENANCE_KEY,
    LEVELS_SCHEMA,
)

_SHOWN = 3


def refresh_command(lake: Path, symbol: Symbol, provenance: Provenance) -> str:
    """The ``backfill levels`` command that rebuilds one part as its footer says it was built."""
    p = provenance.params
    month = provenance.month
    args = [
        "backfill",
        "levels",
        "--lake",
        str(lake),
        "--symbols",
        str(symbol),
        "--profiles",
        str(p.get("profile")),
        "--from",
        str(month.first_day),
        "--to",
        str(month.last_day),
    ]
    if p.get("include_partial"):
        args.append("--include-partial")
    if provenance.kind == EVENTS:
        args += [
            "--tolerance",
            str(p.get("tolerance")),
            "--max-retest-bars",
            str(p.get("max_retest_bars")),
            "--retest-unit",
            str(p.get("retest_unit")),
            "--signal-bar",
            str(p.get("signal_bar")),
            "--scan",
            str(p.get("scan")),
        ]
    else:
        args.append("--no-events")
    return shlex.join(args)


def check_part(
    table: pa.Table,
    kind: str,
    lake: Path,
    symbol: Symbol,
    profile: Profile,
    month: Month,
    path: Path,
    coverage: dict,
) -> list[Finding]:
    """Every check of one levels or events part (pure: the table and the M1 coverage in)."""

    def error(kind_: Kind, detail: str) -> Finding:
        return Finding(Severity.ERROR, kind_, symbol, path, None, detail)

    schema = LEVELS_SCHEMA if kind == LEVELS else EVENTS_SCHEMA
    name = "levels" if kind == LEVELS else "br_events"
    if not table.schema.remove_metadata().equals(schema):
        return [error(Kind.SCHEMA, f"{name} part: columns are not those of docs/levels.md")]
    findings: list[Finding] = []
    rows = table.to_pylist()
    if any(r["symbol"] != str(symbol) or r["profile"] != profile.name for r in rows):
        findings.append(
            error(
                Kind.PARTITION,
                f"symbol or profile differs from the path ({symbol}, {profile.name})",
            )
        )
    outside = [r["session_date"] for r in rows if Month.of(r["session_date"]) != month]
    if outside:
        findings.append(error(Kind.PARTITION, f"session dates outside {month}: {outside[0]}"))
    raw = (table.schema.metadata or {}).get(LEVELS_PROVENANCE_KEY)
    try:
        provenance = None if raw is None else Provenance.decode(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        return [*findings, error(Kind.PROVENANCE_MISSING, f"malformed provenance: {exc}")]
    if provenance is None:
        return [*findings, error(Kind.PROVENANCE_MISSING, "no provenance record in the footer")]
    scan = None
    keys: list[tuple[object, ...]]  # the order rows must hold: levels' and events' differ
    if kind == LEVELS:
        keys = [(r["session_date"], LEVEL_ORDER.get(r["level"], 99)) for r in rows]
        findings += _windows(rows, profile, error)
    else:
        try:
            scan = parse_scan(str(provenance.params.get("scan")))
        except ValueError:
            scan = profile.scan
        keys = [
            (r["session_date"], r["break_ts"], LEVEL_ORDER.get(r["level"], 99), r["attempt"])
            for r in rows
        ]
        findings += _events(rows, profile, scan, error)
    if any(a >= b for a, b in itertools.pairwise(keys)):
        findings.append(
            error(
                Kind.TS_UNSORTED, f"{name} rows not sorted, or a key repeated (levels.md section 5)"
            )
        )
    first, last = source_days(profile, month, scan)
    if dict(provenance.source) != source_of(coverage, first, last):
        command = refresh_command(lake, symbol, provenance)
        findings.append(
            Finding(
                Severity.WARNING,
                Kind.LEVELS_STALE,
                symbol,
                path,
                None,
                f"{name} {profile.name} {month} was built from M1 coverage that has changed "
                f"since: refresh with `{command}`",
            )
        )
    return findings


def _windows(rows: list[dict], profile: Profile, error) -> list[Finding]:  # type: ignore[no-untyped-def]
    bad = []
    for r in rows:
        w = session_windows(profile, r["session_date"], None)
        window = {"PD": w.pd, "PM": w.pm, "OR": w.opening}.get(r["level"][:2])
        if (
            window is None
            or r["window_start_utc"] != window.start
            or r["window_end_utc"] != window.end
            or r["available_from_utc"] != window.end
            or r["valid_to_utc"] != w.session.end
            or r["expected_minutes"] != window.minutes
        ):
            bad.append(f"{r['session_date']} {r['level']}")
    if not bad:
        return []
    return [
        error(
            Kind.LEVELS_WINDOW,
            f"{len(bad)} row(s) whose window or available_from_utc "
            f"is not {profile.name}'s rule: {', '.join(bad[:_SHOWN])}",
        )
    ]


def _events(rows: list[dict], profile: Profile, scan, error) -> list[Finding]:  # type: ignore[no-untyped-def]
    bad = []
    for r in rows:
        w = session_windows(profile, r["session_date"], scan)
        ok = r["prev_ts"] < r["break_ts"] <= r["end_ts"] and w.scan.start < r["break_ts"]
        ok = ok and r["end_ts"] <= w.scan.end
        if r["retest_ts"] is not None:
            ok = ok and r["break_ts"] < r["retest_ts"] <= r["end_ts"]
        if r["signal_ts"] is not None:
            ok = (
                ok
                and r["retest_ts"] is not None
                and r["retest_ts"] <= r["signal_ts"] <= r["end_ts"]
            )
        if not ok:
            bad.append(f"{r['session_date']} {r['level']} #{r['attempt']}")
    if not bad:
        return []
    return [
        error(
            Kind.EVENT_ORDER,
            f"{len(bad)} event(s) not in the order prev_ts < break_ts "
            f"< retest_ts <= signal_ts <= end_ts inside the scan: {', '.join(bad[:_SHOWN])}",
        )
    ]


def verify_levels(
    lake: Path, symbols: Sequence[Symbol], first: date | None, last: date | None
) -> tuple[int, list[Finding]]:
    """Check every levels and events part of ``symbols`` whose month meets ``[first, last]``."""
    parts = 0
    findings: list[Finding] = []
    for symbol in symbols:
        coverage = None
        for profile in PROFILES.values():
            folders = [(LEVELS, levels_symbol_dir(lake, profile.name, symbol))] + [
                (EVENTS, events_symbol_dir(lake, profile.name, tol, symbol))
                for tol in event_tolerances(lake, profile.name)
            ]
            for kind, folder in folders:
                for month, path in iter_month_parts(folder):
                    if (first is not None and month.last_day < first) or (
                        last is not None and month.first_day > last
                    ):
                        continue
                    parts += 1
                    if coverage is None:
                        coverage = read_m1_coverage(lake, symbol)[0]
                    table = read_derived_part(path, symbol)
                    if isinstance(table, Finding):
                        findings.append(table)
                        continue
                    findings += check_part(
                        table, kind, lake, symbol, profile, month, path, coverage
                    )
    return parts, findings
