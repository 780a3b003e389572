"""Write tiny raw lake partitions exactly as docs/contracts.md specifies, for tests of later stages.

``{lake_dir}/raw/{table}/dt=YYYY-MM-DD/part-0.parquet`` with the exact Arrow schemas below. Build rows with
:func:`event` and :func:`item`, then call :func:`write_partition`; ``_interval_start`` is
filled with the partition day's midnight UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.lake import partition_path, partition_schema

# The schema of a written partition (recsys.lake): the contract, _extra and the interval column.
EVENTS_SCHEMA, ITEMS_SCHEMA = (partition_schema(t) for t in ("events", "items"))
SCHEMAS: dict[str, pa.Schema] = {"events": EVENTS_SCHEMA, "items": ITEMS_SCHEMA}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A timezone-aware UTC datetime (shorthand for fixtures)."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def event(
    event_id: str,
    user_id: int,
    item_id: int,
    event_type: str,
    occurred_at: datetime,
    value: float | None = None,
    session_id: str = "s1",
    position: int | None = 0,
) -> dict[str, Any]:
    """One raw events row."""
    return {
        "event_id": event_id,
        "user_id": user_id,
        "item_id": item_id,
        "event_type": event_type,
        "value": value,
        "session_id": session_id,
        "position": position,
        "occurred_at": occurred_at,
    }


def item(
    item_id: int,
    updated_at: datetime,
    title: str = "",
    body: str = "",
    category: str = "news",
    tags: list[str] | None = None,
) -> dict[str, Any]:
    """One raw items row (a version of the item as of ``updated_at``)."""
    return {
        "item_id": item_id,
        "title": title or f"Item {item_id}",
        "body": body or f"Body of item {item_id}.",
        "category": category,
        "tags": tags if tags is not None else [],
        "published_at": utc(2024, 1, 1),
        "updated_at": updated_at,
    }


def write_partition(lake_dir: Path, table: str, day: date, rows: Iterable[dict[str, Any]]) -> Path:
    """Write ``rows`` as the ``table`` partition of ``day`` (replacing it) and return its path.

    ``_interval_start`` defaults to ``day`` at midnight UTC; columns missing from a row are null.
    """
    schema = SCHEMAS[table]
    start = datetime.combine(day, time(0), tzinfo=UTC)
    filled = [{"_interval_start": start, **row} for row in rows]
    if table == "events":  # received_at defaults to the event time (an event that arrived at once)
        filled = [{"received_at": row.get("occurred_at"), **row} for row in filled]
    columns = {f.name: [row.get(f.name) for row in filled] for f in schema}
    path = partition_path(lake_dir, table, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


def expected_mart_rows(lake_dir: Path) -> dict[str, int]:
    """Rows each mart must have, counted from the raw lake with pandas (independently of dbt).

    Events count once per event_id however often they were delivered; the daily marts have one row per entity
    and UTC day with any event; item_texts one row per item.
    """
    events = pd.read_parquet(lake_dir / "raw" / "events").drop_duplicates("event_id")
    days = events["occurred_at"].dt.tz_convert("UTC").dt.date
    per_day = {entity: len(set(zip(events[entity], days, strict=True))) for entity in ("user_id", "item_id")}
    return {
        "interactions": len(events),
        "user_daily_features": per_day["user_id"],
        "item_daily_features": per_day["item_id"],
        "item_texts": pd.read_parquet(lake_dir / "raw" / "items")["item_id"].nunique(),
        "user_recent_items": per_day["user_id"],
    }
