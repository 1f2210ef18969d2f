"""How IB's answers are read: error texts and codes, the served-window header (pure)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from backfill.ib.served import login_zone, parse_served, parse_served_time, zone_named
from backfill.ib.session import (
    INFORMATION_CODES,
    Disconnected,
    DurationTooLong,
    IBError,
    NoPermission,
    PacingViolation,
    SessionBlocked,
    classify_error,
)

UTC = timezone.utc
HMDS = "Historical Market Data Service error message:"


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (162, f"{HMDS}No market data permissions for PAXOS CRYPTO", NoPermission),
        (354, "Requested market data is not subscribed.", NoPermission),
        (
            162,
            f"{HMDS}Trading TWS session is connected from a different IP address",
            SessionBlocked,
        ),
        (10197, "No market data during competing live session", SessionBlocked),
        (162, f"{HMDS}Time length exceed max.", DurationTooLong),
        (162, f"{HMDS}invalid step", DurationTooLong),
        (162, "Historical data request pacing violation", PacingViolation),
        (322, "Error processing request.-'bX' : cause - Duplicate ticker id 5", PacingViolation),
        (162, f"{HMDS}API historical data query cancelled: 7", IBError),
        (366, "No historical data query found for ticker id:7", IBError),
        (1100, "Connectivity between IB and Trader Workstation has been lost.", Disconnected),
    ],
)
def test_each_answer_seen_on_real_gateways_is_typed(code, text, kind):
    assert type(classify_error(code, text, bars=True)) is kind


def test_no_data_is_an_answer_not_an_error():
    assert classify_error(162, f"{HMDS}HMDS query returned no data: BTC@PAXOS Crypto") is None


def test_321_on_a_bars_request_is_too_long_elsewhere_a_plain_error():
    text = "Error validating request.-'bS' : cause - bad value"
    assert isinstance(classify_error(321, text, bars=True), DurationTooLong)
    error = classify_error(321, text)
    assert type(error) is IBError and not error.retryable
    assert isinstance(classify_error(321, f"{text} duration 30 D"), DurationTooLong)


def test_only_permission_and_validation_answers_are_not_retried():
    assert not classify_error(162, "No market data permissions for X").retryable
    assert classify_error(10197, "competing live session").retryable
    assert classify_error(366, "No historical data query found").retryable


def test_farm_status_codes_are_information():
    assert {2104, 2106, 2107, 2158} <= INFORMATION_CODES
    assert 2105 not in INFORMATION_CODES


# -- the served window --------------------------------------------------------------------


def test_header_text_is_read_in_the_login_zone_learned_at_the_handshake():
    zone = login_zone("20250702 08:00:00 EST").zone
    served = parse_served("20250630  19:59:00", "20250701  19:59:00", zone)
    assert served is not None
    # July: New York is UTC-4 whatever abbreviation the handshake used.
    assert served.start == datetime(2025, 6, 30, 23, 59, tzinfo=UTC)
    assert served.end == datetime(2025, 7, 1, 23, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("handshake", "wall", "utc_hour"),
    [
        ("20250115 12:00:00 UTC", "20250115  12:00:00", 12),
        ("20250115 12:00:00 America/New_York", "20250115  12:00:00", 17),
        ("20250115 12:00:00 China Standard Time", "20250115  12:00:00", 4),
        ("20250115 12:00:00 中国标准时间", "20250115  12:00:00", 4),
        ("20250115 12:00:00 CET", "20250115  12:00:00", 11),
        ("20250115 12:00:00 Greenwich Mean Time", "20250115  12:00:00", 12),
    ],
)
def test_login_zones_as_gateways_name_them(handshake, wall, utc_hour):
    when = parse_served_time(wall, login_zone(handshake).zone)
    assert when == datetime(2025, 1, 15, utc_hour, tzinfo=UTC)


def test_epoch_seconds_and_a_written_zone_need_no_login_zone():
    assert parse_served_time("1751414340", None) == datetime(2025, 7, 1, 23, 59, tzinfo=UTC)
    assert parse_served_time("20250701 19:59:00 US/Eastern", None) == datetime(
        2025, 7, 1, 23, 59, tzinfo=UTC
    )


def test_a_header_that_cannot_be_read_for_sure_is_unknown():
    unknown = login_zone("20250115 12:00:00 Mars Standard Time")
    assert unknown.name == "Mars Standard Time" and unknown.zone is None
    assert parse_served("20250701  00:00:00", "20250702  00:00:00", unknown.zone) is None
    utc = zone_named("UTC")
    assert parse_served("garbage", "20250702  00:00:00", utc) is None
    assert parse_served("20250702  00:00:00", "20250701  00:00:00", utc) is None  # reversed
    assert login_zone("20250115 12:00:00").zone is None
