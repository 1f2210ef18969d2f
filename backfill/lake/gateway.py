"""What the lake remembers about a gateway: ``<lake>/_gateway/<host>-<port>.json``.

One finding per key (``window_edges`` today; ``backfill probe`` adds others), each with its
value, when it was checked and its evidence, so a finding past its age is checked again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from backfill.domain import UTC
from backfill.lake.lakeio import update_small
from backfill.lake.objpath import LakePath, lake_path
from backfill.lake.safe_json import (
    SMALL_FILE_MAX_BYTES,
    expect_dict,
    parse_json,
    read_json_file,
)
from backfill.settings import RunSettings

GATEWAY_DIR = "_gateway"
# A gateway's behaviour changes with its version: IB Gateway updates itself now and then.
FINDING_MAX_AGE = RunSettings().finding_max_age
# Findings recorded before each named who learned it: either command may have.
OLD_SOURCE = "backfill probe or run"


def gateway_facts_path(lake: LakePath, host: str, port: int) -> LakePath:
    safe_host = "".join(c if c.isalnum() or c in ".-" else "_" for c in host)
    return lake_path(lake) / GATEWAY_DIR / f"{safe_host}-{port}.json"


def read_finding(
    lake: LakePath,
    host: str,
    port: int,
    key: str,
    now: datetime,
    max_age: timedelta = FINDING_MAX_AGE,
) -> dict[str, Any] | None:
    """The finding ``key`` if recorded within ``max_age`` of ``now``, else None."""
    try:
        finding = _recorded(lake, host, port)[key]
        checked = datetime.fromisoformat(finding["checked_at"])
    except (ValueError, KeyError, TypeError):
        return None  # missing or unreadable: the finding is learned again
    if checked.tzinfo is None or not timedelta(0) <= now - checked <= max_age:
        return None
    return finding


def _recorded(lake: LakePath, host: str, port: int) -> dict[str, Any]:
    """The findings recorded for the gateway (each a dict with a ``checked_at`` string;
    unknown keys are kept, for findings a newer version writes); ``KeyError`` if there is
    no file, ``BadJson`` if it is not usable (a FIFO, too large, too deep, another shape)."""
    facts = read_json_file(gateway_facts_path(lake, host, port), SMALL_FILE_MAX_BYTES)
    if facts is None:
        raise KeyError("findings")
    recorded = expect_dict(expect_dict(facts, "findings file").get("findings"), "findings")
    return {
        key: finding
        for key, finding in recorded.items()
        if isinstance(finding, dict)
        and isinstance(finding.get("checked_at"), str)
        and len(finding["checked_at"]) <= 64
    }


@dataclass(frozen=True)
class GatewayFindings:
    """What ``backfill probe`` recorded for one gateway, split by age: ``fresh`` findings
    (key -> value) are used; ``stale`` ones (older than the age) are named and ignored."""

    path: LakePath
    fresh: dict[str, Any] = field(default_factory=dict)
    stale: tuple[str, ...] = ()
    checked_at: datetime | None = None  # the oldest fresh finding's check
    stale_checked_at: datetime | None = None  # the newest stale finding's check
    max_age: timedelta = FINDING_MAX_AGE
    # Of ``stale``, those checked after now (a clock set wrong, or an edited file): not
    # trusted either, and not "old".
    future: tuple[str, ...] = ()
    future_checked_at: datetime | None = None  # the furthest one
    # Who recorded each fresh finding ("backfill probe", "backfill run"): said, not assumed.
    sources: dict[str, str] = field(default_factory=dict)

    def source(self, keys: tuple[str, ...] | list[str] | None = None) -> str:
        """Who recorded ``keys`` (default: every fresh finding), e.g. "backfill run"."""
        names = dict.fromkeys(
            self.sources.get(k, OLD_SOURCE) for k in (self.fresh if keys is None else keys)
        )
        return ", ".join(names) or OLD_SOURCE

    def describe_stale(self) -> str:
        """One clause for a first line: which findings are too old (or dated in the
        future), and what to do."""
        old = [key for key in self.stale if key not in self.future]
        said = []
        if old:
            when = (
                f", checked {self.stale_checked_at:%Y-%m-%d %H:%M} UTC"
                if self.stale_checked_at
                else ""
            )
            said.append(f"{', '.join(old)} older than {self.max_age.days} days{when}")
        if self.future:
            when = f" {self.future_checked_at:%Y-%m-%d %H:%M} UTC" if self.future_checked_at else ""
            said.append(f"{', '.join(self.future)} checked in the future{when}, not trusted")
        return f"{'; '.join(said)}: stale, run backfill probe again"


def read_findings(
    lake: LakePath,
    host: str,
    port: int,
    now: datetime,
    max_age: timedelta = FINDING_MAX_AGE,
) -> GatewayFindings | None:
    """Every finding recorded for the gateway, fresh or stale; None without a readable file."""
    path = gateway_facts_path(lake, host, port)
    try:
        items = list(_recorded(lake, host, port).items())
    except (ValueError, KeyError):
        return None
    fresh: dict[str, Any] = {}
    sources: dict[str, str] = {}
    stale: list[str] = []
    fresh_at: list[datetime] = []
    stale_at: list[datetime] = []
    future: list[str] = []
    future_at: list[datetime] = []
    for key, finding in items:
        try:
            checked = datetime.fromisoformat(finding["checked_at"])
            value = finding["value"]
        except (ValueError, KeyError, TypeError):
            continue
        if checked.tzinfo is not None and timedelta(0) <= now - checked <= max_age:
            fresh[key] = value
            fresh_at.append(checked)
            source = finding.get("source")
            sources[key] = source if isinstance(source, str) and source else OLD_SOURCE
        else:
            stale.append(key)
            if checked.tzinfo is not None and checked > now:
                future.append(key)
                future_at.append(checked)
            elif checked.tzinfo is not None:
                stale_at.append(checked)
    return GatewayFindings(
        path,
        fresh,
        tuple(stale),
        min(fresh_at, default=None),
        max(stale_at, default=None),
        max_age,
        tuple(future),
        max(future_at, default=None),
        sources,
    )


def write_finding(
    lake: LakePath,
    host: str,
    port: int,
    key: str,
    value: Any,
    evidence: dict[str, Any],
    checked_at: datetime,
    source: str = "backfill run",
) -> LakePath:
    """Record one finding, keeping the others; atomic (a reader never sees half a file).
    ``source`` names who learned it (``probe`` passes "backfill probe")."""
    path = gateway_facts_path(lake, host, port)
    entry = {
        "value": value,
        "checked_at": checked_at.astimezone(UTC).isoformat(),
        "source": source,
        "evidence": evidence,
    }

    def recorded(facts: Any) -> str:
        try:
            expect_dict(facts, "findings file")
            expect_dict(facts.get("findings"), "findings")
        except ValueError:  # absent, or not usable: written afresh
            facts = {"findings": {}}
        facts["gateway"] = f"{host}:{port}"
        facts["findings"][key] = entry
        try:
            return json.dumps(facts, indent=1, sort_keys=True)
        except (RecursionError, ValueError, TypeError):  # what was there cannot be kept
            return json.dumps(
                {"gateway": facts["gateway"], "findings": {key: entry}}, indent=1, sort_keys=True
            )

    # Two probes at once: neither loses the other's finding (``update_small``).
    def change(old: bytes | None) -> bytes:
        try:
            facts = parse_json(old, SMALL_FILE_MAX_BYTES) if old is not None else None
        except ValueError:  # not usable: written afresh
            facts = None
        return recorded(facts).encode()

    update_small(path, change, max_bytes=SMALL_FILE_MAX_BYTES)
    return path
