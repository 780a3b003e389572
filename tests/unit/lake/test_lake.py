"""The raw lake contract, written once: schemas, derived Postgres DDL, the source DDL, layout and UTC days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from recsys import lake
from recsys.errors import ConfigError, IntervalError
from recsys.sources.schema import TABLES


def test_a_partition_is_the_contract_plus_drift_and_interval_columns() -> None:
    assert lake.partition_schema("events").names == [
        "event_id", "user_id", "item_id", "event_type", "value", "session_id", "position", "occurred_at",
        "received_at", "_extra", "_interval_start",
    ]  # fmt: skip
    assert lake.partition_schema("items").field("tags").type == pa.list_(pa.string())
    assert lake.contract_types("items")["_interval_start"] == pa.timestamp("us", tz="UTC")
    assert lake.RAW_TABLES == ("events", "items")  # the source's users table is not extracted


def test_postgres_columns_are_derived_from_the_arrow_schema() -> None:
    assert lake.postgres_columns("events") == (
        ("event_id", "text"), ("user_id", "bigint"), ("item_id", "bigint"), ("event_type", "text"),
        ("value", "double precision"), ("session_id", "text"), ("position", "integer"),
        ("occurred_at", "timestamptz"), ("received_at", "timestamptz"), ("_extra", "text"),
        ("_interval_start", "timestamptz"),
    )  # fmt: skip
    assert dict(lake.postgres_columns("items"))["tags"] == "text[]"
    for table in lake.RAW_TABLES:
        assert [name for name, _ in lake.postgres_columns(table)] == lake.partition_schema(table).names


def test_an_arrow_type_without_a_postgres_mapping_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="no PostgreSQL mapping"):
        lake.postgres_type(pa.float16())


def test_the_source_tables_hold_exactly_the_contract_columns() -> None:
    for table in lake.RAW_TABLES:
        assert [c.name for c in TABLES[table].columns] == lake.CONTRACT_SCHEMAS[table].names
        assert lake.INTERVAL_COLUMN[table] in TABLES[table].c
        assert [c.name for c in TABLES[table].primary_key] == list(lake.KEYS[table])


def test_unknown_tables_are_refused_with_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown raw table 'users'.*'events', 'items'"):
        lake.partition_path(Path("/lake"), "users", date(2026, 11, 1))


def test_layout_paths() -> None:
    root, day = Path("/lake"), date(2026, 11, 2)
    start = datetime(2026, 11, 2, tzinfo=UTC)
    assert lake.partition_path(root, "events", start) == Path("/lake/raw/events/dt=2026-11-02/part-0.parquet")
    assert lake.partition_path(root, "events", day) == lake.partition_path(root, "events", start)
    assert lake.quarantined_rows_path(root, "items", day) == Path("/lake/quarantine/items/dt=2026-11-02/rows.jsonl")
    attempt = datetime(2026, 11, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert lake.gate_quarantine_dir(root, "items", day, attempt) == Path(
        "/lake/quarantine/gate/items/dt=2026-11-02/attempt-20261103T040506000007Z"
    )
    assert lake.partition_day(Path("/lake/raw/events/dt=2026-11-02")) == day


def test_partitions_lists_days_oldest_first(tmp_path: Path) -> None:
    for day in (date(2026, 11, 3), date(2026, 11, 1)):
        path = lake.partition_path(tmp_path, "items", day)
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    (tmp_path / "raw" / "items" / "dt=2026-11-02").mkdir()  # a folder without a file is no partition
    assert list(lake.partitions(tmp_path, "items")) == [date(2026, 11, 1), date(2026, 11, 3)]
    assert lake.partitions(tmp_path, "events") == {}


def test_utc_days_and_intervals() -> None:
    assert lake.day_interval(date(2026, 12, 31)) == (
        datetime(2026, 12, 31, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    plus_two = timezone(timedelta(hours=2))
    assert lake.utc(datetime(2026, 11, 2, 1, 0, tzinfo=plus_two)) == datetime(2026, 11, 1, 23, 0, tzinfo=UTC)
    assert lake.utc(datetime(2026, 11, 2)) == datetime(2026, 11, 2, tzinfo=UTC)  # naive means UTC
    assert lake.naive_utc(datetime(2026, 11, 2, 1, 0, tzinfo=plus_two)) == datetime(2026, 11, 1, 23, 0)
    assert lake.day_key(datetime(2026, 11, 2, 1, 0, tzinfo=plus_two)) == "dt=2026-11-01"  # the UTC day
    assert lake.days_between(date(2026, 11, 30), date(2026, 12, 2)) == [
        date(2026, 11, 30),
        date(2026, 12, 1),
        date(2026, 12, 2),
    ]
    assert lake.days_between(date(2026, 11, 2), date(2026, 11, 1)) == []


def test_an_inverted_interval_is_an_interval_error() -> None:
    start = datetime(2026, 11, 2, tzinfo=UTC)
    with pytest.raises(IntervalError, match="end must be after start"):
        lake.check_interval(start, start)
    assert issubclass(IntervalError, ValueError) and issubclass(IntervalError, ConfigError)
