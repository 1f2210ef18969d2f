"""What the lake remembers about a gateway: ``<lake>/_gateway/<host>-<port>.json``.

One finding per key (``window_edges`` today; ``backfill probe`` adds others), each with its
value, when it was checked and its evidence, so a finding past its age is checked again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from backfill.domain import UTC
from backfill.lake.objpath import is_object, lake_path, update_whole
from backfill.lake.storage import StorageError
from backfill.settings import RunSettings

GATEWAY_DIR = "_gateway"
# A gateway's behaviour changes with its version: IB Gateway updates itself now and then.
FINDING_MAX_AGE = RunSettings().finding_max_age


def gateway_facts_path(lake: Path, host: str, port: int) -> Path:
    safe_host = "".join(c if c.isalnum() or c in ".-" else "_" for c in host)
    return lake_path(lake) / GATEWAY_DIR / f"{safe_host}-{port}.json"


def read_finding(
    lake: Path, host: str, port: int, key: str, now: datetime,
    max_age: timedelta = FINDING_MAX_AGE,
) -> dict[str, Any] | None:
    """The finding ``key`` if recorded within ``max_age`` of ``now``, else None."""
    try:
        facts = json.loads(gateway_facts_path(lake, host, port).read_text())
        finding = facts["findings"][key]
        checked = datetime.fromisoformat(finding["checked_at"])
    except (OSError, ValueError, KeyError, TypeError, StorageError):
        return None  # missing or unreadable: the finding is learned again
    if checked.tzinfo is None or not timedelta(0) <= now - checked <= max_age:
        return None
    return finding


@dataclass(frozen=True)
class GatewayFindings:
    """What ``backfill probe`` recorded for one gateway, split by age: ``fresh`` findings
    (key -> value) are used; ``stale`` ones (older than the age) are named and ignored."""

    path: Path
    fresh: dict[str, Any] = field(default_factory=dict)
    stale: tuple[str, ...] = ()
    checked_at: datetime | None = None  # the oldest fresh finding's check
    stale_checked_at: datetime | None = None  # the newest stale finding's check
    max_age: timedelta = FINDING_MAX_AGE

    def describe_stale(self) -> str:
        """One clause for a first line: which findings are too old, and what to do."""
        when = (f", checked {self.stale_checked_at:%Y-%m-%d %H:%M} UTC"
                if self.stale_checked_at else "")
        return (f"{', '.join(self.stale)} older than {self.max_age.days} days{when}: "
                "stale, run backfill probe again")


def read_findings(
    lake: Path, host: str, port: int, now: datetime, max_age: timedelta = FINDING_MAX_AGE,
) -> GatewayFindings | None:
    """Every finding recorded for the gateway, fresh or stale; None without a readable file."""
    path = gateway_facts_path(lake, host, port)
    try:
        recorded = json.loads(path.read_text())["findings"]
        items = list(recorded.items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StorageError):
        return None
    fresh: dict[str, Any] = {}
    stale: list[str] = []
    fresh_at: list[datetime] = []
    stale_at: list[datetime] = []
    for key, finding in items:
        try:
            checked = datetime.fromisoformat(finding["checked_at"])
            value = finding["value"]
        except (ValueError, KeyError, TypeError):
            continue
        if checked.tzinfo is not None and timedelta(0) <= now - checked <= max_age:
            fresh[key] = value
            fresh_at.append(checked)
        else:
            stale.append(key)
            if checked.tzinfo is not None:
                stale_at.append(checked)
    return GatewayFindings(path, fresh, tuple(stale), min(fresh_at, default=None),
                           max(stale_at, default=None), max_age)


def write_finding(
    lake: Path, host: str, port: int, key: str, value: Any, evidence: dict[str, Any],
    checked_at: datetime,
) -> Path:
    """Record one finding, keeping the others; atomic (a reader never sees half a file)."""
    path = gateway_facts_path(lake, host, port)
    entry = {"value": value, "checked_at": checked_at.astimezone(UTC).isoformat(),
             "evidence": evidence}
    if is_object(path):
        # Two probes at once: compare-and-swap, so neither loses the other's finding.
        def change(old: bytes | None) -> bytes:
            try:
                facts = json.loads(old or b"")
                if not isinstance(facts.get("findings"), dict):
                    raise ValueError
            except (ValueError, AttributeError):
                facts = {"findings": {}}
            facts["gateway"] = f"{host}:{port}"
            facts["findings"][key] = entry
            return json.dumps(facts, indent=1, sort_keys=True).encode()

        update_whole(path, change)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        facts = json.loads(path.read_text())
        if not isinstance(facts.get("findings"), dict):
            raise ValueError
    except (OSError, ValueError, AttributeError):
        facts = {"findings": {}}
    facts["gateway"] = f"{host}:{port}"
    facts["findings"][key] = {
        "value": value,
        "checked_at": checked_at.astimezone(UTC).isoformat(),
        "evidence": evidence,
    }
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(json.dumps(facts, indent=1, sort_keys=True))
    os.replace(temp, path)
    return path
