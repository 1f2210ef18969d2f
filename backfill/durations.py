"""How a duration (or a count) is written for people, in ``plan``, ``verify`` and on the
run's dashboard."""

from __future__ import annotations


def format_duration(seconds: float | None, *, clock: bool = False) -> str:
    """A short duration: ``45s``, ``12m03s``, ``3h05m``, ``2d04h``; with ``clock`` a ticking
    ``1:02:03`` (the dashboard's elapsed time and ETA). ``--:--`` when unknown."""
    if seconds is None:
        return "--:--"
    s = round(seconds)
    if clock:
        hours, rest = divmod(s, 3600)
        minutes, secs = divmod(rest, 60)
        return f"{hours}:{minutes:02d}:{secs:02d}"
    if s < 60:
        return f"{seconds:.1f}s" if 0 < seconds < 10 else f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 worker``, ``2 workers``: a count with its noun in the right number."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
