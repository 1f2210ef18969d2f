"""The two datasets' schemas, sort orders and footer key (levels.md section 5)."""

from __future__ import annotations

import pyarrow as pa

from backfill.lake.schema import TS_TYPE

LEVELS = ("PDH", "PDL", "PDC", "PMH", "PML", "ORH", "ORL")
LEVEL_ORDER = {name: i for i, name in enumerate(LEVELS)}
DIRECTION = {
    "PDH": "up",
    "PDL": "down",
    "PDC": None,
    "PMH": "up",
    "PML": "down",
    "ORH": "up",
    "ORL": "down",
}
OUTCOMES = ("signal", "invalidated_price", "invalidated_time", "open_at_scan_end")

_KEY = [
    pa.field("source", pa.string(), nullable=False),
    pa.field("market", pa.string(), nullable=False),
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("profile", pa.string(), nullable=False),
    pa.field("tz", pa.string(), nullable=False),
    pa.field("session_date", pa.date32(), nullable=False),
    pa.field("level", pa.string(), nullable=False),
    pa.field("direction", pa.string()),
]

LEVELS_SCHEMA = pa.schema(
    [
        *_KEY,
        pa.field("value", pa.float64()),
        pa.field("value_ts", TS_TYPE),
        pa.field("window_start_utc", TS_TYPE, nullable=False),
        pa.field("window_end_utc", TS_TYPE, nullable=False),
        pa.field("available_from_utc", TS_TYPE, nullable=False),
        pa.field("valid_to_utc", TS_TYPE, nullable=False),
        pa.field("minutes", pa.int32(), nullable=False),
        pa.field("expected_minutes", pa.int32(), nullable=False),
        pa.field("complete", pa.bool_(), nullable=False),
        pa.field("inside_or", pa.bool_()),
    ]
)

EVENTS_SCHEMA = pa.schema(
    [
        *_KEY,
        pa.field("level_value", pa.float64(), nullable=False),
        pa.field("inside_or", pa.bool_()),
        pa.field("tolerance_spec", pa.string(), nullable=False),
        pa.field("tolerance_abs", pa.float64(), nullable=False),
        pa.field("max_retest_bars", pa.int16(), nullable=False),
        pa.field("retest_unit", pa.string(), nullable=False),
        pa.field("signal_bar", pa.string(), nullable=False),
        pa.field("attempt", pa.int16(), nullable=False),
        pa.field("prev_ts", TS_TYPE, nullable=False),
        pa.field("prev_mid", pa.float64(), nullable=False),
        pa.field("break_ts", TS_TYPE, nullable=False),
        pa.field("break_open", pa.float64(), nullable=False),
        pa.field("break_high", pa.float64(), nullable=False),
        pa.field("break_low", pa.float64(), nullable=False),
        pa.field("break_close", pa.float64(), nullable=False),
        pa.field("break_mid", pa.float64(), nullable=False),
        pa.field("retest_ts", TS_TYPE),
        pa.field("retest_low", pa.float64()),
        pa.field("retest_high", pa.float64()),
        pa.field("retest_close", pa.float64()),
        pa.field("signal_ts", TS_TYPE),
        pa.field("signal_close", pa.float64()),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("end_ts", TS_TYPE, nullable=False),
        pa.field("bars_to_retest", pa.int16()),
        pa.field("bars_to_end", pa.int16(), nullable=False),
        pa.field("minutes_to_end", pa.int32(), nullable=False),
        pa.field("complete", pa.bool_(), nullable=False),
    ]
)

# Footer key of both datasets: the parameters and the M1 coverage each part was built from.
LEVELS_PROVENANCE_KEY = b"backfill.levels"

# Written like the bar parts (ZSTD), dictionaries on the repeated text columns.
WRITE_OPTIONS = {
    "compression": "zstd",
    "compression_level": 1,
    "write_statistics": True,
    "use_dictionary": [
        "source",
        "market",
        "symbol",
        "profile",
        "tz",
        "level",
        "direction",
        "tolerance_spec",
        "retest_unit",
        "signal_bar",
        "outcome",
    ],
}


def empty(schema: pa.Schema) -> pa.Table:
    """A table of ``schema`` with no row (``Schema.empty_table`` imports pandas: 1 s)."""
    return pa.table([pa.array([], f.type) for f in schema], schema=schema)
