"""Great Expectations gate on one raw events partition (``{lake}/raw/events/dt=YYYY-MM-DD/part-0.parquet``).

The suite checks what later stages rely on: ids present and unique, known event types, timestamps inside
the extracted window ``[start - late_data_overlap, end)``, ratings within 0..5 and non-negative positions.
The result JSON lands at ``{home}/validation/raw_events/dt=YYYY-MM-DD/result.json``; a failure raises
:class:`ValidationFailedError` with a readable summary and stops the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from recsys.config import Settings
from recsys.errors import ValidationFailedError
from recsys.validation.gx import ExpectationFailure, ephemeral_context, failures, write_json_atomically

EVENT_TYPES = ("impression", "click", "rating", "like", "purchase", "tag")
SUITE_NAME = "raw_events"


@dataclass(frozen=True)
class GateResult:
    """Outcome of one validation gate on one partition."""

    suite: str
    partition: Path
    success: bool
    evaluated_expectations: int
    successful_expectations: int
    failures: tuple[ExpectationFailure, ...]
    result_path: Path

    def summary(self) -> str:
        """A few readable lines: verdict, then one line per failed expectation."""
        head = (
            f"{self.suite} on {self.partition}: {self.successful_expectations}/{self.evaluated_expectations} "
            f"expectations passed"
        )
        return "\n".join([head, *(f"- {f.describe()}" for f in self.failures)])


def raw_events_partition(settings: Settings, interval_start: datetime) -> Path:
    """The raw events partition of the data interval starting at ``interval_start``."""
    return settings.lake / "raw" / "events" / f"dt={_utc(interval_start):%Y-%m-%d}" / "part-0.parquet"


def raw_events_result_path(settings: Settings, interval_start: datetime) -> Path:
    """Where the gate writes its JSON validation result for the interval."""
    return settings.home / "validation" / SUITE_NAME / f"dt={_utc(interval_start):%Y-%m-%d}" / "result.json"


def raw_events_suite(window_start: datetime, window_end: datetime) -> Any:
    """The ``raw_events`` ExpectationSuite for events extracted from ``[window_start, window_end)``."""
    import great_expectations as gx
    import great_expectations.expectations as gxe

    expectations = [
        gxe.ExpectColumnValuesToNotBeNull(column="event_id"),
        gxe.ExpectColumnValuesToBeUnique(column="event_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="user_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
        gxe.ExpectColumnValuesToBeInSet(column="event_type", value_set=list(EVENT_TYPES)),
        gxe.ExpectColumnValuesToNotBeNull(column="occurred_at"),
        gxe.ExpectColumnValuesToBeBetween(
            column="occurred_at", min_value=_utc(window_start), max_value=_utc(window_end), strict_max=True
        ),
        gxe.ExpectColumnValuesToBeBetween(column="value", min_value=0, max_value=5),  # nulls are not checked
        gxe.ExpectColumnValuesToBeBetween(column="position", min_value=0),
    ]
    return gx.ExpectationSuite(name=SUITE_NAME, expectations=expectations)


def validate_raw_events(settings: Settings, interval_start: datetime, interval_end: datetime) -> GateResult:
    """Validate the interval's raw events partition, write the JSON result, raise if any expectation fails.

    Naive datetimes are taken as UTC. Raises :class:`ValidationFailedError` when the partition is missing
    or an expectation fails (the message names each failed expectation with counts and a sample).
    """
    start, end = _utc(interval_start), _utc(interval_end)
    if end <= start:
        raise ValueError(f"interval_end {end} must be after interval_start {start}.")
    partition = raw_events_partition(settings, start)
    frame = _read_partition(partition)
    # Events are cut on received_at; their occurred_at may trail by up to the allowed lateness.
    window_start = start - max(settings.late_data_overlap, settings.max_event_lateness)
    result = _run_suite(raw_events_suite(window_start, end), frame)
    result_path = raw_events_result_path(settings, start)
    write_json_atomically(result_path, result.to_json_dict())
    gate = _gate_result(partition, result, result_path)
    if not gate.success:
        raise ValidationFailedError(
            f"{gate.summary()}\nFull result: {result_path}. Fix the source data or the extraction for "
            f"[{window_start.isoformat()}, {end.isoformat()}), re-extract the interval, then re-run the gate."
        )
    return gate


def _utc(ts: datetime) -> datetime:
    """A stdlib UTC datetime (naive means UTC; subclasses such as pendulum's are converted)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return datetime.fromtimestamp(ts.timestamp(), tz=UTC)


def _read_partition(partition: Path) -> Any:
    import pandas as pd

    if not partition.is_file():
        raise ValidationFailedError(
            f"No raw events partition at {partition}: run the extract stage for this interval first."
        )
    return pd.read_parquet(partition, dtype_backend="numpy_nullable")


def _run_suite(suite: Any, frame: Any) -> Any:
    import great_expectations as gx

    context = ephemeral_context()
    batch = (
        context.data_sources.add_pandas("lake")
        .add_dataframe_asset(suite.name)
        .add_batch_definition_whole_dataframe("partition")
    )
    definition = gx.ValidationDefinition(name=f"{suite.name}_partition", data=batch, suite=context.suites.add(suite))
    return context.validation_definitions.add(definition).run(
        batch_parameters={"dataframe": frame}, result_format="SUMMARY"
    )


def _gate_result(partition: Path, result: Any, result_path: Path) -> GateResult:
    stats = result.statistics
    return GateResult(
        suite=SUITE_NAME,
        partition=partition,
        success=bool(result.success),
        evaluated_expectations=int(stats["evaluated_expectations"]),
        successful_expectations=int(stats["successful_expectations"]),
        failures=tuple(failures(result)),
        result_path=result_path,
    )
