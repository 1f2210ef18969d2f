"""Input from a buggy or hostile environment: symbols files, a lake's backfill.toml, absurd
findings, odd Unicode: refused in one line with exit 2 (or ignored), never read without end,
never echoed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from backfill import read_bars
from backfill.domain import UTC, BadInput, Symbol, parse_symbols
from backfill.findings import apply_findings
from backfill.lake.gateway import read_findings, write_finding
from backfill.settings import RunSettings

SECRET = "root:$6$saltsalt$hashhashhashhash:19000:0:99999:7:::"
PLAN = ("plan", "--symbols", "BTC-USD", "--from", "2025-07-01", "--to", "2025-07-03")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backfill", *args],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def assert_refused(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    # Besides the error: at most the line naming the backfill.toml that was read.
    lines = [
        line
        for line in done.stderr.strip().splitlines()
        if not line.startswith("backfill: settings from ")
    ]
    assert len(lines) == 1, done.stderr
    return lines[0]


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def _big(tmp_path: Path) -> Path:
    path = tmp_path / "big.txt"
    path.write_text("BTC-USD\n" * 300_000)  # 2.4 MB, above the 1 MB cap
    return path


def _secret(tmp_path: Path) -> Path:
    path = tmp_path / "shadow"
    path.write_text(SECRET + "\n")
    return path


SYMBOLS_FILES = {
    "dev-zero": lambda _: Path("/dev/zero"),
    "fifo": _fifo,
    "big": _big,
    "secret": _secret,
    "folder": lambda tmp: tmp,
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("make", list(SYMBOLS_FILES.values()), ids=list(SYMBOLS_FILES))
def test_a_symbols_file_that_is_no_symbols_file(tmp_path: Path, make) -> None:
    path = make(tmp_path)
    lake = tmp_path / "lake"
    line = assert_refused(
        cli(*PLAN[:1], "--lake", str(lake), "--symbols-file", str(path), *PLAN[3:])
    )
    assert "saltsalt" not in line and "hash" not in line and "99999" not in line
    # The same file named by a lake's backfill.toml.
    lake.mkdir()
    (lake / "backfill.toml").write_text(f'symbols-file = "{path}"\n')
    line = assert_refused(cli("plan", "--lake", str(lake), *PLAN[3:]))
    assert "saltsalt" not in line and "hash" not in line


@pytest.mark.timeout(60)
@pytest.mark.parametrize("content", ["fifo", "nested", "huge"])
def test_a_backfill_toml_that_is_no_toml(tmp_path: Path, content: str) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    toml = lake / "backfill.toml"
    if content == "fifo":
        os.mkfifo(toml)
    elif content == "nested":
        toml.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    else:
        with open(toml, "wb") as file:
            file.truncate(2 << 30)
    done = cli("plan", "--lake", str(lake), *PLAN[1:])
    if content == "fifo":  # not a file: no backfill.toml, as for a folder of that name
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    else:
        assert_refused(done)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1.0", "0.5"])
def test_request_timeout_must_be_a_finite_number_of_seconds(tmp_path: Path, value: str) -> None:
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / "backfill.toml").write_text(f"request-timeout = {value}\n")
    line = assert_refused(cli("run", "--gateway", "127.0.0.1:1", "--lake", str(lake), *PLAN[1:]))
    assert "request-timeout" in line


@pytest.mark.parametrize("text", ["ﬆ-usd", "btc-usd\u0131", "ＢＴＣ-USD"])
def test_symbols_are_ascii_before_they_are_upper_cased(text: str) -> None:
    with pytest.raises(BadInput, match="malformed symbol"):
        Symbol.parse(text)
    assert parse_symbols("btc-usd") == [Symbol("BTC", "USD")]


def test_a_malformed_symbol_is_shown_up_to_its_first_bad_character() -> None:
    with pytest.raises(BadInput) as caught:
        Symbol.parse(SECRET)
    assert "'root:'" in str(caught.value) and "salt" not in str(caught.value)


def test_read_bars_takes_every_day_a_date_can_name(tmp_path: Path) -> None:
    from backfill.lake import store
    from tests.lake.helpers import BTC, FETCHED, day_bars

    store.write_batch(
        tmp_path, BTC, day_bars(BTC, date(2025, 7, 1)), [date(2025, 7, 1)], fetched_at=FETCHED
    )
    table = read_bars(tmp_path, "BTC-USD", "0001-01-01", "9999-12-31")
    assert table.num_rows == 1440


NOW = datetime(2025, 9, 1, tzinfo=UTC)


def test_an_absurd_base_latency_is_not_used_for_the_eta(tmp_path: Path) -> None:
    write_finding(tmp_path, "h", 1, "latency_s", {"1": 1e300}, {}, NOW)
    findings = read_findings(tmp_path, "h", 1, NOW)
    applied = apply_findings(RunSettings(), findings, command="plan")
    assert applied.settings.latency_s == RunSettings().latency_s


def test_a_finding_checked_in_the_future_is_not_called_old(tmp_path: Path) -> None:
    write_finding(tmp_path, "h", 1, "max_window_days", 3, {}, NOW + timedelta(days=30))
    findings = read_findings(tmp_path, "h", 1, NOW)
    assert findings is not None and findings.fresh == {}
    said = findings.describe_stale()
    assert "in the future" in said and "older than" not in said
    assert json.loads(findings.path.read_text())["findings"]["max_window_days"]["value"] == 3
