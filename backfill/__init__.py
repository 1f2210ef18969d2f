"""backfill: 1-minute crypto bars from Interactive Brokers into a Parquet lake."""

__version__ = "0.1.0"
