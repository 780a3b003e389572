"""The raw lake contract: its tables, their Arrow schema, the event types, the partition layout, and UTC days.

Every stage that reads or writes the lake goes through these names, so the contract is written down once:

- ``RAW_TABLES`` and, per table, the Arrow schema of a partition (:func:`partition_schema`): the contract's
  columns, ``_extra`` (source columns the contract does not know, as JSON) and ``_interval_start`` (the
  data interval the partition holds). The PostgreSQL raw tables are derived from it
  (:func:`postgres_columns`), so the lake and the warehouse cannot drift apart.
- The layout: ``{lake}/raw/{table}/dt=YYYY-MM-DD/part-0.parquet``, one partition per table and UTC day of
  the interval start; rows that extraction could not parse go to ``{lake}/quarantine/{table}/dt=.../rows.jsonl``
  and partitions a gate refused to ``{lake}/quarantine/gate/{table}/dt=.../attempt-<UTC time>/``.
- UTC helpers: a data interval is ``[start, end)`` of aware UTC datetimes; naive ones are taken as UTC.

Importing this module is cheap (pyarrow only); it imports nothing else of the project but ``errors``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from recsys.errors import ConfigError, IntervalError

# The source's users table is not extracted: its profile fields did not help the cold-user path on the data
# the project runs on (bench/results/cold_users.json, docs/architecture.md), so nothing downstream reads it.
RAW_TABLES = ("events", "items")
EVENT_TYPES = ("impression", "click", "rating", "like", "purchase", "tag")
TS = pa.timestamp("us", tz="UTC")
EXTRA = "_extra"  # source columns outside the contract, as a JSON object per row (schema drift, visible)
INTERVAL_START = "_interval_start"  # the data interval start a partition was extracted for
PARTITION_FILE = "part-0.parquet"

# The contract's columns per raw table (docs/contracts.md, "Raw Parquet schemas").
CONTRACT_SCHEMAS: dict[str, pa.Schema] = {
    "events": pa.schema(
        [
            ("event_id", pa.string()),
            ("user_id", pa.int64()),
            ("item_id", pa.int64()),
            ("event_type", pa.string()),
            ("value", pa.float64()),
            ("session_id", pa.string()),
            ("position", pa.int32()),
            ("occurred_at", TS),  # event time, from the client
            ("received_at", TS),  # ingestion time, from the server: what intervals are cut on
        ]
    ),
    "items": pa.schema(
        [
            ("item_id", pa.int64()),
            ("title", pa.string()),
            ("body", pa.string()),
            ("category", pa.string()),
            ("tags", pa.list_(pa.string())),
            ("published_at", TS),
            ("updated_at", TS),
        ]
    ),
}
# What extraction converts each source row into: the contract plus the drift column.
RAW_SCHEMAS: dict[str, pa.Schema] = {
    name: schema.append(pa.field(EXTRA, pa.string())) for name, schema in CONTRACT_SCHEMAS.items()
}
# Column that bounds each table's rows to a data interval. Events are cut on server ingestion time, which only
# moves forward: a late or mis-clocked event still lands in exactly one partition (the one it arrived in),
# where the gates can see and flag its odd ``occurred_at``.
INTERVAL_COLUMN = {"events": "received_at", "items": "updated_at"}
# Primary key of each table: extraction's row order, so a re-run writes identical bytes.
KEYS: dict[str, tuple[str, ...]] = {"events": ("event_id",), "items": ("item_id",)}


def check_table(table: str) -> str:
    """``table`` if it is a raw table, else a ConfigError that lists them."""
    if table not in RAW_SCHEMAS:
        raise ConfigError(f"unknown raw table {table!r}; the lake holds {list(RAW_TABLES)}.")
    return table


def partition_schema(table: str) -> pa.Schema:
    """The Arrow schema of one written partition: the contract, ``_extra`` and ``_interval_start``."""
    return RAW_SCHEMAS[check_table(table)].append(pa.field(INTERVAL_START, TS))


def contract_types(table: str) -> dict[str, pa.DataType]:
    """The Arrow type of each column of a written partition of ``table``."""
    return {field.name: field.type for field in partition_schema(table)}


# --- PostgreSQL raw tables, derived from the Arrow schema ------------------------------------------------

_PG_TYPES: tuple[tuple[pa.DataType, str], ...] = (
    (pa.string(), "text"),
    (pa.int64(), "bigint"),
    (pa.int32(), "integer"),
    (pa.float64(), "double precision"),
    (TS, "timestamptz"),
    (pa.list_(pa.string()), "text[]"),
)


def postgres_type(arrow_type: pa.DataType) -> str:
    """The PostgreSQL column type that holds ``arrow_type`` values exactly."""
    for candidate, sql_type in _PG_TYPES:
        if arrow_type.equals(candidate):
            return sql_type
    raise ConfigError(f"the raw contract uses Arrow type {arrow_type}, which has no PostgreSQL mapping here.")


def postgres_columns(table: str) -> tuple[tuple[str, str], ...]:
    """``(column, PostgreSQL type)`` of the raw table in the warehouse: every column of a partition."""
    return tuple((field.name, postgres_type(field.type)) for field in partition_schema(table))


# --- UTC days and intervals ---------------------------------------------------------------------------------


def utc(ts: datetime) -> datetime:
    """A stdlib UTC datetime: naive means UTC; aware ones (pendulum's too) are converted."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return datetime.fromtimestamp(ts.timestamp(), tz=UTC)


def naive_utc(ts: datetime) -> datetime:
    """``ts`` in UTC without a zone (what a DATETIME column of MySQL/SQLite or MongoDB compares against)."""
    return utc(ts).replace(tzinfo=None)


def day_start(day: date) -> datetime:
    """``day`` 00:00 UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def day_interval(day: date) -> tuple[datetime, datetime]:
    """``[day 00:00, next day 00:00)`` in UTC."""
    start = day_start(day)
    return start, start + timedelta(days=1)


def check_interval(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The interval as UTC datetimes; a ConfigError when it is empty or inverted."""
    start, end = utc(start), utc(end)
    if end <= start:
        raise IntervalError(
            f"empty or inverted interval [{start.isoformat()}, {end.isoformat()}): end must be after start."
        )
    return start, end


def days_between(first: date, last: date) -> list[date]:
    """Every day of ``[first, last]``, oldest first (empty when ``last`` is before ``first``)."""
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


# --- partition layout ------------------------------------------------------------------------------------


def day_key(start: datetime | date) -> str:
    """``dt=YYYY-MM-DD``: the folder name of the partition of the interval starting at ``start`` (UTC day)."""
    day = utc(start).date() if isinstance(start, datetime) else start
    return f"dt={day.isoformat()}"


def partition_day(folder: Path) -> date:
    """The day of a ``dt=YYYY-MM-DD`` partition folder."""
    return date.fromisoformat(folder.name.removeprefix("dt="))


def partition_dir(lake: Path, table: str, start: datetime | date) -> Path:
    """``{lake}/raw/{table}/dt=YYYY-MM-DD``: the folder of one raw partition."""
    return lake / "raw" / check_table(table) / day_key(start)


def partition_path(lake: Path, table: str, start: datetime | date) -> Path:
    """``{lake}/raw/{table}/dt=YYYY-MM-DD/part-0.parquet``: the file of one raw partition."""
    return partition_dir(lake, table, start) / PARTITION_FILE


def partitions(lake: Path, table: str) -> dict[date, Path]:
    """``{day: file}`` of every partition of one raw table, oldest first."""
    root = lake / "raw" / check_table(table)
    return {partition_day(path.parent): path for path in sorted(root.glob(f"dt=*/{PARTITION_FILE}"))}


def quarantined_rows_path(lake: Path, table: str, start: datetime | date) -> Path:
    """Where extraction writes the rows of one interval it could not convert, each with its reason."""
    return lake / "quarantine" / check_table(table) / day_key(start) / "rows.jsonl"


def gate_quarantine_dir(lake: Path, table: str, start: datetime | date, attempt: datetime) -> Path:
    """Where a partition refused by its gate is moved, one folder per attempt (nothing is ever overwritten)."""
    stamp = utc(attempt).strftime("%Y%m%dT%H%M%S%fZ")
    return lake / "quarantine" / "gate" / check_table(table) / day_key(start) / f"attempt-{stamp}"
