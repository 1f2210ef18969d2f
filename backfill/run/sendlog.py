"""Hand a worker's last sends on to the next worker for its symbol, through the lake.

IB remembers requests for 15 s (identical) and 2 s (per contract). A worker restarted after
a crash, or the next run right after a Ctrl-C, would otherwise repeat the requests that
were in flight and draw pacing violations.
"""

from __future__ import annotations

import json

from backfill.lake.lakeio import write_small
from backfill.lake.objpath import LakePath
from backfill.lake.paths import recent_sends_path
from backfill.lake.safe_json import (
    SMALL_FILE_MAX_BYTES,
    expect_list,
    expect_number,
    expect_str,
    read_json_file,
)

Recent = list[tuple[str, float]]  # (request key, seconds ago)


def save_recent_sends(lake: LakePath, symbol: object, recent: Recent, now_wall: float) -> None:
    """Write ``recent`` as wall-clock times, atomically (a reader never sees half a file)."""
    document = json.dumps([[key, now_wall - ago] for key, ago in recent])
    # Not durable: losing it to a power cut costs a few seconds of pacing care, no data.
    write_small(recent_sends_path(lake, symbol), document.encode(), durable=False)


def load_recent_sends(lake: LakePath, symbol: object, now_wall: float) -> Recent:
    """The last worker's sends as (key, seconds ago); nothing if there is no usable record."""
    try:
        entries = expect_list(
            read_json_file(recent_sends_path(lake, symbol), SMALL_FILE_MAX_BYTES) or [], "sends"
        )
        recent = []
        for entry in entries[:_MAX_SENDS]:
            key, at = expect_list(entry, "send")
            recent.append(
                (
                    expect_str(key, "key", 400),
                    max(0.0, now_wall - expect_number(at, "at", 0.0, 1e11)),
                )
            )
        return recent
    except (ValueError, TypeError):  # BadJson, or an entry not a pair
        return []  # absent or not usable: the worker's own pacing still holds


_MAX_SENDS = 1000  # IB remembers a few seconds of sends: a worker's are a few dozen
