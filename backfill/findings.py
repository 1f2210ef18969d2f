"""What ``backfill probe``'s findings change in a run's or a plan's settings (pure).

The lake file is read at the edge (``backfill.lake.gateway.read_findings``); this decides,
from its fresh findings, the settings to use and the first line that says so. Stale
findings (older than ``RunSettings.finding_max_age_days``) are ignored and named.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from backfill.lake.gateway import GatewayFindings
from backfill.settings import RunSettings


@dataclass(frozen=True)
class Applied:
    settings: RunSettings
    used: tuple[str, ...]  # the finding keys that changed something (or, edges, will)
    line: str  # the first line: what was used, what was stale; "" without a findings file

    def to_json(self, findings: GatewayFindings | None) -> dict[str, Any] | None:
        if findings is None:
            return None
        return {
            "path": str(findings.path),
            "checked_at": findings.checked_at.isoformat() if findings.checked_at else None,
            "used": list(self.used),
            "stale": list(findings.stale),
        }


# A base latency beyond this is no measurement (IB answers a day in seconds; the request
# timeout is a minute): an edited or corrupt file, which would make a 300-digit ETA.
MAX_BASE_LATENCY_S = 600.0


def base_latency(findings: GatewayFindings) -> float | None:
    """``latency_s`` with 1 in flight: the gateway's base latency for a full day."""
    measured = findings.fresh.get("latency_s")
    value = measured.get("1") if isinstance(measured, dict) else None
    if (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value <= MAX_BASE_LATENCY_S
    ):
        return float(value)
    return None


def longest_window(findings: GatewayFindings) -> int | None:
    value = findings.fresh.get("max_window_days")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def apply_findings(
    settings: RunSettings,
    findings: GatewayFindings | None,
    *,
    command: str,
    latency_given: bool = False,
) -> Applied:
    """The settings ``command`` ("run" or "plan") uses with these findings, and its line.

    - ``max_window_days`` clips ``window_days`` (never raises it);
    - plan: the base latency is the ETA's latency, unless ``--latency-ms`` was given;
    - run ``--rate auto``: the base latency is the controller's first base estimate. Not
      the start rate: the probe sends about 20 requests, never a sustained rate, so it
      cannot show any rate above the start safe. Only for 1-day windows, the size it was
      measured on (a longer window is slower to answer, and would read as a queue);
    - run: ``window_edges``, ``header_clock`` and ``header_format`` are information only:
      the run learns them again on its preflight connection (``run.gateway_edges``), since
      a rule that no longer fits would lose bars.
    """
    if findings is None:
        return Applied(settings, (), "")
    used: list[str] = []
    said: list[str] = []
    longest = longest_window(findings)
    if longest is not None and longest < settings.window_days:
        settings = dataclasses.replace(settings, window_days=longest)
        used.append("max_window_days")
        said.append(f"windows of {longest} day(s), the longest this gateway answered")
    base = base_latency(findings)
    if base is not None and command == "plan":
        if latency_given:
            said.append(f"base latency {base:.3f}s not used (--latency-ms given)")
        else:
            settings = dataclasses.replace(settings, latency_s=base)
            used.append("latency_s")
            said.append(f"base latency {base:.3f}s for the ETA")
    elif base is not None and command == "run" and settings.rate_auto:
        if settings.window_days == 1:
            settings = dataclasses.replace(settings, base_latency_hint_s=base)
            used.append("latency_s")
            said.append(
                f"--rate auto starts at {settings.rate:g} req/s (the probe measures "
                f"no sustained rate) with base latency {base:.3f}s as its first "
                "estimate"
            )
        else:
            said.append(
                f"base latency {base:.3f}s not used by --rate auto (measured on "
                f"1-day windows, the run asks {settings.window_days})"
            )
    when = f", checked {findings.checked_at:%Y-%m-%d %H:%M} UTC" if findings.checked_at else ""
    # Labelled by who learned them: a run records the window-edge rule it learned too.
    line = f"Gateway findings ({findings.source()}) from {findings.path}{when}"
    body = "; ".join(said) if said else ("" if findings.stale else "nothing to change")
    if body:
        line += f": {body}"
    if findings.stale:
        line += f"{'; ' if body else ': '}ignored {findings.describe_stale()}"
    return Applied(settings, tuple(used), line)


def finding_text(key: str, value: Any) -> str:
    """One probe finding as a reader would say it (``probe``'s text output), not a dict."""
    if key == "max_window_days" and isinstance(value, int):
        return f"{value} day{'s' if value != 1 else ''}"
    if key == "latency_s" and isinstance(value, dict):
        return ", ".join(
            f"{v:.3f} s with {n} in flight"
            if isinstance(v, (int, float))
            else f"{v} with {n} in flight"
            for n, v in value.items()
        )
    if key == "future_end" and isinstance(value, dict):
        forming = "still forming" if value.get("partial_last_bar") else "a finished minute"
        return f"last bar starts {value.get('last_bar')} ({forming})"
    return str(value)
