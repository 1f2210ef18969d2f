"""The request log: one frozen record per request, as JSON lines and (for tests) in memory."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True)
class RequestRecord:
    """What was asked, when, and how the simulator answered.

    ``window_start``/``window_end`` bound the bar STARTS served ([start, end), ISO UTC);
    ``outcome`` is one of bars, no_data, error, hung, cancelled, dropped, ok, connected.
    """

    received: float
    answered: float | None
    client_id: int
    req_id: int
    kind: str  # historical, head_timestamp, contract_details, cancel, connect, unsupported
    outcome: str
    symbol: str | None = None
    end: str | None = None
    duration: str | None = None
    bar_size: str | None = None
    what_to_show: str | None = None
    window_start: str | None = None
    window_end: str | None = None
    error_code: int | None = None
    bars: int = 0
    detail: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))


class RequestLog:
    """Thread-safe append-only log; each JSON line is flushed so other processes can tail it.

    Records stay in memory only with ``keep=True``: a long backfill sends 100,000s of requests.
    """

    def __init__(self, path: Path | None = None, *, keep: bool = False) -> None:
        self.keep = keep
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def add(self, record: RequestRecord) -> None:
        with self._lock:
            if self.keep:
                self._records.append(record)
            if self._file is not None:
                self._file.write(record.to_json() + "\n")
                self._file.flush()

    def records(self) -> list[RequestRecord]:
        if not self.keep:
            raise RuntimeError(
                "request records are not kept: start the simulator with "
                "SimConfig(keep_requests=True), or read its --log file"
            )
        with self._lock:
            return list(self._records)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def read_log(path: Path) -> list[RequestRecord]:
    """Load a JSON-lines request log written by the simulator."""
    with path.open(encoding="utf-8") as handle:
        return [RequestRecord(**json.loads(line)) for line in handle if line.strip()]
