"""Great Expectations gate on one raw items partition (item versions updated within the interval)."""

from __future__ import annotations

from datetime import UTC, datetime

from recsys import lake
from recsys.config import ItemsQuality, Settings
from recsys.validation.gates import (
    GateResult,
    extraction_failures,
    previous_partition_rows,
    raw_partition_source,
    run_gate_on_source,
)
from recsys.validation.suites import raw_items_suite


def gate_raw_items(
    settings: Settings, interval_start: datetime, interval_end: datetime, config: ItemsQuality | None = None
) -> GateResult:
    """Validate the interval's raw items partition and write the result; returns the verdict (never raises
    on bad data, only on a missing partition or a bad interval)."""
    start, end = lake.check_interval(interval_start, interval_end)
    cfg = config or settings.quality.items
    partition = lake.partition_path(settings.lake, "items", start)
    source, schema_problems = raw_partition_source(partition, "items")
    schema_problems += extraction_failures(settings, "items", start, source.rows)
    suite = raw_items_suite(
        start - settings.late_data_overlap,
        end,
        cfg,
        now=datetime.now(UTC),
        previous_rows=previous_partition_rows(settings, "items", start),
    )
    return run_gate_on_source(settings, suite, source, partition, start, schema_problems)
