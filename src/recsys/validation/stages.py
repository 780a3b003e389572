"""The gate stages a DAG task, the CLI and the tests call for one data interval.

``validate_raw_stage`` gates the raw items and events partitions of the interval; each failing partition is
moved into quarantine (``{lake}/quarantine/gate/{table}/dt=.../attempt-.../`` with its validation result)
and the stage raises :class:`ValidationFailedError` with a readable summary, so the pipeline stops before
dbt. ``validate_marts_stage`` gates the marts' rows of the interval after ``dbt build`` and raises likewise
(marts are rebuilt from the raw lake, so nothing is quarantined there). Results are stored and rendered into
the data docs site under ``{home}/gx``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from recsys import lake
from recsys.config import Settings
from recsys.errors import ValidationFailedError
from recsys.validation.gates import GateResult, data_docs_index, quarantine

RAW_GATED_TABLES = ("items", "events")  # items first: the events gate checks items against the catalog


def gate_raw_partitions(settings: Settings, start: datetime, end: datetime) -> dict[str, GateResult]:
    """Run the raw gates of the interval and quarantine each failing partition; does not raise on bad data."""
    from recsys.validation.raw_events import gate_raw_events
    from recsys.validation.raw_items import gate_raw_items

    cfg = settings.quality
    results: dict[str, GateResult] = {}
    for table in RAW_GATED_TABLES:
        gate = (
            gate_raw_items(settings, start, end, cfg.items)
            if table == "items"
            else gate_raw_events(settings, start, end, cfg.events)
        )
        results[table] = gate if gate.success else quarantine(settings, table, gate)
    return results


def validate_raw_stage(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """Gate the interval's raw partitions; quarantine and raise :class:`ValidationFailedError` on failure."""
    start, end = lake.check_interval(start, end)
    results = gate_raw_partitions(settings, start, end)
    _raise_on_failure(settings, "raw", results, start, end)
    return _summary(settings, results)


def validate_marts_stage(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """Gate the marts' rows of the interval; raise :class:`ValidationFailedError` on failure."""
    from recsys.validation.marts import gate_marts

    start, end = lake.check_interval(start, end)
    results = gate_marts(settings, start, end)
    _raise_on_failure(settings, "mart", results, start, end)
    return _summary(settings, results)


def _summary(settings: Settings, results: dict[str, GateResult]) -> dict[str, Any]:
    return {
        "gates": {name: gate.as_dict() for name, gate in results.items()},
        "data_docs": str(data_docs_index(settings)),
    }


def _raise_on_failure(
    settings: Settings, kind: str, results: dict[str, GateResult], start: datetime, end: datetime
) -> None:
    failed = [gate for gate in results.values() if not gate.success]
    if not failed:
        return
    lines = [f"{len(failed)} {kind} gate(s) failed for [{start.isoformat()}, {end.isoformat()}):"]
    for gate in failed:
        lines.append(gate.summary())
        lines.append(f"  result: {gate.result_path}")
        if gate.quarantined_to:
            lines.append(f"  partition moved to quarantine: {gate.quarantined_to}")
    if kind == "raw":
        lines.append(
            "Fix the source data (or the extraction), then re-run the interval: extraction writes a fresh "
            "partition and the gate checks it again. Quarantined partitions are kept for inspection."
        )
    else:
        lines.append("Fix the dbt model or the raw data named above, rebuild (dbt build) and re-run this gate.")
    lines.append(f"Data docs: {data_docs_index(settings)}")
    raise ValidationFailedError("\n".join(lines))
