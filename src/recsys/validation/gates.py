"""Run a raw-partition or mart gate: read the data of one interval, check its Arrow schema, validate it
with its suite through a stored GX checkpoint (results store + data docs under ``{home}/gx``), write the
result JSON, and move a failing raw partition into quarantine with its validation result beside it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from recsys import lake
from recsys.config import Settings
from recsys.errors import ValidationFailedError
from recsys.validation.chunked import RowSource, validate_in_buckets
from recsys.validation.gx import ExpectationFailure, failures, file_context, run_checkpoint, write_json_atomically


@dataclass(frozen=True)
class GateResult:
    """Outcome of one validation gate on one partition (or one interval of a mart)."""

    suite: str
    partition: Path
    success: bool
    evaluated_expectations: int
    successful_expectations: int
    failures: tuple[ExpectationFailure, ...]
    result_path: Path
    quarantined_to: Path | None = None

    def summary(self) -> str:
        """A few readable lines: verdict, then one line per failed expectation."""
        head = (
            f"{self.suite} on {self.partition}: {self.successful_expectations}/{self.evaluated_expectations} "
            f"expectations passed"
        )
        return "\n".join([head, *(f"- {f.describe()}" for f in self.failures)])

    def as_dict(self) -> dict[str, Any]:
        """JSON-able summary (an Airflow XCom)."""
        return {
            "success": self.success,
            "evaluated": self.evaluated_expectations,
            "passed": self.successful_expectations,
            "failures": [f.describe() for f in self.failures],
            "result": str(self.result_path),
            "quarantined_to": str(self.quarantined_to) if self.quarantined_to else None,
        }


def result_path(settings: Settings, suite: str, day_start: datetime) -> Path:
    """Where a gate writes its JSON validation result for the interval."""
    return settings.home / "validation" / suite / lake.day_key(day_start) / "result.json"


def gx_root(settings: Settings) -> Path:
    """The GX project: suites, checkpoints, stored results; data docs at ``gx/uncommitted/data_docs``."""
    return settings.home / "gx"


def data_docs_index(settings: Settings) -> Path:
    """The data docs site's entry page."""
    return gx_root(settings) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


def previous_partition_rows(settings: Settings, table: str, day_start: datetime) -> int | None:
    """Rows of the previous day's partition of ``table`` (from the Parquet footer), None when absent."""
    import pyarrow.parquet as pq

    previous = lake.partition_path(settings.lake, table, lake.utc(day_start) - timedelta(days=1))
    return pq.ParquetFile(previous).metadata.num_rows if previous.is_file() else None


def quarantined_rows(settings: Settings, table: str, day_start: datetime) -> int:
    """Rows extraction quarantined for the interval (one JSON line each), 0 when there is no quarantine file."""
    path = lake.quarantined_rows_path(settings.lake, table, day_start)
    if not path.is_file():
        return 0
    with path.open("rb") as fh:
        return sum(1 for line in fh if line.strip())


def extraction_failures(settings: Settings, table: str, day_start: datetime, rows: int) -> list[ExpectationFailure]:
    """A failure when more than ``quality.extraction.max_quarantined_share`` of the interval's source rows were
    quarantined at extraction (they could not be converted to the contract, e.g. a retyped column)."""
    quarantined = quarantined_rows(settings, table, day_start)
    total = quarantined + rows
    limit = settings.quality.extraction.max_quarantined_share
    if not total or quarantined / total <= limit:
        return []
    where = lake.quarantined_rows_path(settings.lake, table, day_start)
    return [
        ExpectationFailure(
            expectation="extracted_rows_quarantined_share",
            column=None,
            unexpected_count=quarantined,
            element_count=total,
            sample=(),
            exception=None,
            detail=f"{quarantined} of {total} source rows ({quarantined / total:.2%}) were quarantined at "
            f"extraction, above the allowed {limit:.2%} (quality.extraction.max_quarantined_share): see the "
            f"reasons in {where}, fix the source (or the contract) and re-extract the interval",
        )
    ]


_BATCH_ROWS = 65_536


def read_raw_partition(partition: Path, table: str) -> tuple[Any, list[ExpectationFailure]]:
    """The partition as a pandas frame (Arrow-backed strings) and its schema failures against the contract."""
    source, problems = raw_partition_source(partition, table)
    return source.frame(), problems


def raw_partition_source(partition: Path, table: str) -> tuple[RowSource, list[ExpectationFailure]]:
    """The partition as a :class:`RowSource` (read in record batches, never whole) and its schema failures."""
    import pyarrow.parquet as pq

    if not partition.is_file():
        raise ValidationFailedError(f"No raw {table} partition at {partition}: run the extract stage first.")
    meta = pq.ParquetFile(partition).metadata
    schema = meta.schema.to_arrow_schema()

    def read() -> Any:
        with pq.ParquetFile(partition, pre_buffer=False) as parquet:
            # Neither pre-buffering nor threads: either makes pyarrow hold read-ahead data that grows with the file
            yield from parquet.iter_batches(batch_size=_BATCH_ROWS, use_threads=False)

    return RowSource(meta.num_rows, schema, read, arrow_strings_to_pandas), schema_failures(schema, table)


def arrow_strings_to_pandas(table: Any) -> Any:
    """A pandas frame whose strings stay Arrow-backed (the raw gates' frames)."""
    import pandas as pd
    import pyarrow as pa

    return table.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)


def schema_failures(schema: Any, table: str) -> list[ExpectationFailure]:
    """A failure per contract column whose Arrow type differs (missing columns are left to the suite).

    Types compare as Arrow types, so a list column read back with another child field name still matches.
    """
    found = {field.name: field.type for field in schema}
    return [
        ExpectationFailure(
            expectation="arrow_type_matches_contract",
            column=name,
            unexpected_count=None,
            element_count=None,
            sample=(),
            exception=None,
            detail=f"Arrow type is {found[name]}, the contract (docs/contracts.md) says {expected}",
        )
        for name, expected in lake.contract_types(table).items()
        if name in found and not found[name].equals(expected)
    ]


def run_gate(
    settings: Settings,
    suite: Any,
    frame: Any,
    partition: Path,
    day_start: datetime,
    extra_failures: list[ExpectationFailure] | None = None,
) -> GateResult:
    """Validate ``frame`` with ``suite`` (stored result + data docs), write the result JSON; never raises."""
    context = file_context(gx_root(settings))
    result = run_checkpoint(context, suite, frame, run_name=f"{suite.name}-{lake.utc(day_start):%Y-%m-%d}")
    found = [*(extra_failures or []), *failures(result)]
    stats = result.statistics
    path = result_path(settings, suite.name, day_start)
    payload = result.to_json_dict()
    payload["schema_failures"] = [f.describe() for f in extra_failures or []]
    payload["success"] = bool(result.success) and not extra_failures
    write_json_atomically(path, payload)
    extra = len(extra_failures or [])
    return GateResult(
        suite=suite.name,
        partition=partition,
        success=payload["success"],
        evaluated_expectations=int(stats["evaluated_expectations"]) + extra,
        successful_expectations=int(stats["successful_expectations"]),
        failures=tuple(found),
        result_path=path,
    )


def run_gate_on_source(
    settings: Settings,
    suite: Any,
    source: RowSource,
    partition: Path,
    day_start: datetime,
    extra_failures: list[ExpectationFailure] | None = None,
    derive: Callable[[Any], Any] = lambda frame: frame,
) -> GateResult:
    """:func:`run_gate` on ``source``: in one frame within ``quality.chunk_rows`` rows, else bucket by bucket
    (:mod:`recsys.validation.chunked`, same verdict, bounded memory); never raises on bad data."""
    chunk_rows = settings.quality.chunk_rows
    if source.rows <= chunk_rows:
        return run_gate(settings, suite, derive(source.frame()), partition, day_start, extra_failures)
    result = validate_in_buckets(
        file_context(gx_root(settings)),
        suite,
        source,
        chunk_rows=chunk_rows,
        run_name=f"{suite.name}-{lake.utc(day_start):%Y-%m-%d}",
        workdir=settings.home / "tmp" / "gates",
        derive=derive,
    )
    extra = list(extra_failures or [])
    payload = result.to_json_dict()
    payload["schema_failures"] = [f.describe() for f in extra]
    payload["success"] = result.success and not extra
    path = result_path(settings, suite.name, day_start)
    write_json_atomically(path, payload)
    stats = result.statistics()
    return GateResult(
        suite=suite.name,
        partition=partition,
        success=payload["success"],
        evaluated_expectations=stats["evaluated_expectations"] + len(extra),
        successful_expectations=stats["successful_expectations"],
        failures=tuple([*extra, *result.failures()]),
        result_path=path,
    )


def quarantine(settings: Settings, table: str, gate: GateResult) -> GateResult:
    """Move the failing partition's folder to ``{lake}/quarantine/gate/{table}/dt=.../attempt-<UTC time>/``
    with the validation result and a summary beside it. Nothing is deleted; a later extraction of the
    interval writes a fresh partition, which the gate checks again.
    """
    source = gate.partition.parent
    target = lake.gate_quarantine_dir(settings.lake, table, lake.partition_day(source), datetime.now(UTC))
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)
    if gate.result_path.is_file():
        (target / "validation_result.json").write_text(gate.result_path.read_text())
    (target / "summary.txt").write_text(gate.summary() + "\n")
    return replace(gate, quarantined_to=target)
