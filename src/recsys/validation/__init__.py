"""Validation stage: Great Expectations gates on lake partitions (GX is imported only when a gate runs)."""

from recsys.validation.raw_events import (
    ExpectationFailure,
    GateResult,
    raw_events_partition,
    raw_events_result_path,
    raw_events_suite,
    validate_raw_events,
)

__all__ = [
    "ExpectationFailure",
    "GateResult",
    "raw_events_partition",
    "raw_events_result_path",
    "raw_events_suite",
    "validate_raw_events",
]
