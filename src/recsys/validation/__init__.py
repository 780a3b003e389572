"""Validation stage: Great Expectations gates on lake partitions and marts (GX is imported only when a gate runs)."""

from recsys.validation.gates import GateResult
from recsys.validation.gx import ExpectationFailure
from recsys.validation.raw_events import (
    gate_raw_events,
    raw_events_partition,
    raw_events_result_path,
    validate_raw_events,
)
from recsys.validation.suites import mart_suites, raw_events_suite, raw_items_suite

__all__ = [
    "ExpectationFailure",
    "GateResult",
    "gate_raw_events",
    "mart_suites",
    "raw_events_partition",
    "raw_events_result_path",
    "raw_events_suite",
    "raw_items_suite",
    "validate_raw_events",
]
