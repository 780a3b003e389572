"""Great Expectations gate on one raw events partition (``{lake}/raw/events/dt=YYYY-MM-DD/part-0.parquet``).

The suite checks what later stages rely on: the contract's columns and Arrow types, ids present and unique,
no event logged twice under two ids, known event types and items, timestamps inside the extracted window
``[start - late_data_overlap, end)`` and not in the future, ratings and positions in range, and the row
count (absolute and against the previous partition). The result JSON lands at
``{home}/validation/raw_events/dt=YYYY-MM-DD/result.json``; a failure raises :class:`ValidationFailedError`
with a readable summary.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys import lake
from recsys.config import EventsQuality, Settings
from recsys.errors import ValidationFailedError
from recsys.validation.gates import (
    GateResult,
    extraction_failures,
    previous_partition_rows,
    raw_partition_source,
    result_path,
    run_gate_on_source,
)
from recsys.validation.suites import (
    DUPLICATE_EXEMPT_COLUMN,
    UNKNOWN_ITEM_COLUMN,
    duplicate_exempt_ids,
    raw_events_suite,
)

SUITE_NAME = "raw_events"

__all__ = ["GateResult", "gate_raw_events", "raw_events_partition", "raw_events_result_path", "validate_raw_events"]


def raw_events_partition(settings: Settings, interval_start: datetime) -> Path:
    """The raw events partition of the data interval starting at ``interval_start``."""
    return lake.partition_path(settings.lake, "events", interval_start)


def raw_events_result_path(settings: Settings, interval_start: datetime) -> Path:
    """Where the gate writes its JSON validation result for the interval."""
    return result_path(settings, SUITE_NAME, interval_start)


def known_item_ids(settings: Settings, before: datetime) -> Any:
    """Item ids of every raw items partition whose day starts before ``before`` (the catalog so far)."""
    import numpy as np
    import pyarrow.parquet as pq

    ids = []
    for day, path in lake.partitions(settings.lake, "items").items():
        if lake.day_start(day) < before and "item_id" in pq.read_schema(path).names:
            ids.append(pq.read_table(path, columns=["item_id"]).column("item_id").to_numpy(zero_copy_only=False))
    return np.unique(np.concatenate(ids)) if ids else np.array([], dtype="int64")


def gate_raw_events(
    settings: Settings, interval_start: datetime, interval_end: datetime, config: EventsQuality | None = None
) -> GateResult:
    """Validate the interval's raw events partition and write the result; returns the verdict, never raises
    on bad data (only on a missing partition or a bad interval)."""
    start, end = lake.check_interval(interval_start, interval_end)
    cfg = config or settings.quality.events
    partition = raw_events_partition(settings, start)
    source, schema_problems = raw_partition_source(partition, "events")
    schema_problems += extraction_failures(settings, "events", start, source.rows)
    check_catalog = "item_id" in source.schema.names and not any(f.column == "item_id" for f in schema_problems)
    known = known_item_ids(settings, end) if check_catalog else None
    exempt = bool(cfg.duplicate_key and cfg.duplicate_exempt_event_types)

    def derive(frame: Any) -> Any:
        """The derived columns the suite checks, row by row (so they hold in any bucket of rows)."""
        if check_catalog:
            frame[UNKNOWN_ITEM_COLUMN] = frame["item_id"].astype("Int64").where(~frame["item_id"].isin(known))
        if exempt:
            frame[DUPLICATE_EXEMPT_COLUMN] = duplicate_exempt_ids(frame, cfg.duplicate_exempt_event_types)
        return frame

    suite = raw_events_suite(
        start - max(settings.late_data_overlap, settings.max_event_lateness),
        end,
        cfg,
        now=datetime.now(UTC),
        previous_rows=previous_partition_rows(settings, "events", start),
        check_catalog=check_catalog,
    )
    return run_gate_on_source(settings, suite, source, partition, start, schema_problems, derive)


def validate_raw_events(settings: Settings, interval_start: datetime, interval_end: datetime) -> GateResult:
    """Validate the interval's raw events partition, write the JSON result, raise if any expectation fails.

    Naive datetimes are taken as UTC. Raises :class:`ValidationFailedError` when the partition is missing
    or an expectation fails (the message names each failed expectation with counts and a sample).
    ``recsys.validation.stages.validate_raw_stage`` also moves a failing partition into quarantine.
    """
    gate = gate_raw_events(settings, interval_start, interval_end)
    if not gate.success:
        start, end = lake.check_interval(interval_start, interval_end)
        raise ValidationFailedError(
            f"{gate.summary()}\nFull result: {gate.result_path}. Fix the source data or the extraction for "
            f"[{(start - max(settings.late_data_overlap, settings.max_event_lateness)).isoformat()}, "
            f"{end.isoformat()}), re-extract the interval, "
            "then re-run the gate."
        )
    return gate
