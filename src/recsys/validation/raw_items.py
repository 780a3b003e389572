"""Great Expectations gate on one raw items partition (item versions updated within the interval)."""

from __future__ import annotations

from datetime import UTC, datetime

from recsys.config import Settings
from recsys.validation.config import ItemsQuality, quality_config
from recsys.validation.gates import (
    GateResult,
    check_interval,
    previous_partition_rows,
    raw_partition,
    read_raw_partition,
    run_gate,
)
from recsys.validation.suites import raw_items_suite


def gate_raw_items(
    settings: Settings, interval_start: datetime, interval_end: datetime, config: ItemsQuality | None = None
) -> GateResult:
    """Validate the interval's raw items partition and write the result; returns the verdict (never raises
    on bad data, only on a missing partition or a bad interval)."""
    start, end = check_interval(interval_start, interval_end)
    cfg = config or quality_config(settings).items
    partition = raw_partition(settings, "items", start)
    frame, schema_problems = read_raw_partition(partition, "items")
    suite = raw_items_suite(
        start - settings.late_data_overlap,
        end,
        cfg,
        now=datetime.now(UTC),
        previous_rows=previous_partition_rows(settings, "items", start),
    )
    return run_gate(settings, suite, frame, partition, start, schema_problems)
