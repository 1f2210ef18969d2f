"""Where each symbol's history starts at the gateway (its head timestamp), kept in the lake.

``run`` asks IB's head timestamp (reqHeadTimeStamp) once per symbol and records it in
``<lake>/_gateway/heads.json`` (a ``_`` name: readers of ``data/`` never see it), so later
runs and ``plan`` clip their range to it without asking: days before a symbol's head are
"before listing", neither requested nor missing.

IB rarely moves a head earlier (history added later). A head recorded more than
``RunSettings.head_max_age_days`` ago is asked again, but only by a run whose range starts
before it: days the new head adds are then missing, and fetched.

The decisions (``listing_days``, ``heads_to_ask``) are pure; ``read_heads`` and
``record_heads`` are the file's I/O (written whole: temp file, fsync, ``os.replace``, under
a file lock so two runs merge their answers).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from backfill.domain import UTC, Symbol
from backfill.lake.gateway import GATEWAY_DIR  # beside what the lake knows of each gateway
from backfill.lake.objpath import is_object, update_whole
from backfill.lake.safe_json import (
    SMALL_FILE_MAX_BYTES,
    expect_dict,
    expect_str,
    parse_json,
    read_json_file,
)

HEADS_FILE = "heads.json"


@dataclass(frozen=True)
class Head:
    """A symbol's first bar at the gateway, and when the gateway said so."""

    head: datetime
    asked_at: datetime

    @property
    def day(self) -> date:
        return self.head.astimezone(UTC).date()


def heads_path(lake: Path) -> Path:
    return lake / GATEWAY_DIR / HEADS_FILE


def listing_days(heads: Mapping[Symbol, Head]) -> dict[Symbol, date]:
    """The first day worth asking for, per symbol with a recorded head."""
    return {symbol: head.day for symbol, head in heads.items()}


def heads_to_ask(
    recorded: Mapping[Symbol, Head],
    symbols: Iterable[Symbol],
    first: date,
    *,
    now: datetime,
    max_age_days: float,
    contradicted: Iterable[Symbol] = (),
) -> list[Symbol]:
    """Which of ``symbols`` (those with days to fetch from ``first``) need their head asked:
    none recorded, or one recorded over ``max_age_days`` ago that ``first`` lies before.
    ``contradicted`` ones (the lake holds bars from before their recorded head: the record
    was edited, or IB was wrong) are asked again whatever the record's age."""
    ask = []
    contradicted = set(contradicted)
    for symbol in dict.fromkeys([*symbols, *contradicted]):
        head = recorded.get(symbol)
        if (
            head is None
            or symbol in contradicted
            or (first < head.day and now - head.asked_at > timedelta(days=max_age_days))
        ):
            ask.append(symbol)
    return ask


def read_heads(lake: Path) -> dict[Symbol, Head]:
    """The recorded heads; an absent or unreadable file is an empty record (it is only a
    saving: what is not recorded is asked again)."""
    try:
        return _heads_of(read_json_file(heads_path(lake), SMALL_FILE_MAX_BYTES))
    except (ValueError, OverflowError):  # BadJson, BadInput, a bad date: nothing recorded
        return {}


def _heads_of(raw: object) -> dict[Symbol, Head]:
    """The heads a parsed heads.json holds (ValueError, OverflowError if it is not one)."""
    document = expect_dict(raw or {}, "heads.json")
    return {
        Symbol.parse(expect_str(name, "symbol", 40)): Head(
            _utc(expect_str(expect_dict(entry, name).get("head"), "head", 64)),
            _utc(expect_str(entry.get("asked_at"), "asked_at", 64)),
        )
        for name, entry in expect_dict(document.get("heads", {}), "heads").items()
    }


def record_heads(lake: Path, answers: Mapping[Symbol, Head]) -> None:
    """Add ``answers`` to the lake's record (OSError if it cannot be written)."""
    if not answers:
        return
    path = heads_path(lake)
    if is_object(path):
        update_whole(
            path,
            lambda old: json.dumps(
                _heads_document({**_parse_heads(old), **answers}), indent=1
            ).encode(),
        )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    import filelock  # here, where a lock is taken: plan reads the heads without (0.01 s)

    with filelock.FileLock(path.with_name(f".{HEADS_FILE}.lock")):
        heads = {**read_heads(lake), **answers}
        document = {
            "heads": {
                str(symbol): {"head": h.head.isoformat(), "asked_at": h.asked_at.isoformat()}
                for symbol, h in sorted(heads.items(), key=lambda item: str(item[0]))
            }
        }
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{HEADS_FILE}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(document, file, indent=1)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


def _heads_document(heads: Mapping[Symbol, Head]) -> dict:
    return {
        "heads": {
            str(symbol): {"head": h.head.isoformat(), "asked_at": h.asked_at.isoformat()}
            for symbol, h in sorted(heads.items(), key=lambda item: str(item[0]))
        }
    }


def _parse_heads(data: bytes | None) -> dict[Symbol, Head]:
    try:
        return _heads_of(parse_json(data, SMALL_FILE_MAX_BYTES) if data is not None else None)
    except (ValueError, OverflowError):
        return {}


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)
