"""Great Expectations gates on the marts: the rows of one data interval of each mart, in either warehouse."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from recsys import lake
from recsys.config import QualitySettings, Settings
from recsys.errors import MissingMartError, ValidationFailedError
from recsys.transform.warehouse import interval_rows, mart_location
from recsys.validation.chunked import RowSource
from recsys.validation.gates import GateResult, run_gate_on_source
from recsys.validation.suites import RECENT_COUNT, mart_suites


def mart_rows(settings: Settings, mart: str, start: datetime, end: datetime) -> RowSource:
    """The mart rows of ``[start, end)`` as a :class:`RowSource`: events by ``occurred_at``, daily marts by
    ``feature_date``, ``item_texts`` whole (the current catalog). Read in batches where the mart lives."""
    try:
        rows, schema, read = interval_rows(settings, mart, start, end)
    except MissingMartError as exc:
        raise ValidationFailedError(str(exc)) from exc
    return RowSource(rows, schema, read, lambda table: table.to_pandas())


def gate_marts(
    settings: Settings, interval_start: datetime, interval_end: datetime, config: QualitySettings | None = None
) -> dict[str, GateResult]:
    """Validate each mart's rows of the interval; ``{mart: verdict}`` (never raises on bad data)."""
    start, end = lake.check_interval(interval_start, interval_end)
    cfg = config or settings.quality
    suites = mart_suites(
        cfg.marts, min_interactions=min(cfg.events.min_rows, 1), recent_items_limit=settings.recent_items_limit
    )
    return {
        mart: run_gate_on_source(
            settings,
            suite,
            mart_rows(settings, mart, start, end),
            mart_location(settings, mart),
            start,
            derive=lambda frame, mart=mart: _with_derived(mart, frame),
        )
        for mart, suite in suites.items()
    }


def _with_derived(mart: str, frame: Any) -> Any:
    """Add the columns a suite checks but GX cannot compute (the length of a list column)."""
    if mart == "user_recent_items" and "recent_item_ids" in frame.columns:
        frame = frame.assign(**{RECENT_COUNT: frame["recent_item_ids"].map(lambda v: 0 if v is None else len(v))})
    return frame
