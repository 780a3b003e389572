"""Great Expectations plumbing shared by the gates: an offline ephemeral context and result summaries."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE_SIZE = 5


@dataclass(frozen=True)
class ExpectationFailure:
    """One failed expectation, in words a person can act on."""

    expectation: str
    column: str | None
    unexpected_count: int | None
    element_count: int | None
    sample: tuple[Any, ...]
    exception: str | None
    detail: str | None = None

    def describe(self) -> str:
        """One line: which expectation on which column, how many rows, a small sample."""
        target = f"{self.expectation}(column={self.column})" if self.column else self.expectation
        if self.detail:
            return f"{target}: {self.detail}"
        if self.exception:
            return f"{target}: could not be evaluated: {self.exception}"
        counts = f"{self.unexpected_count} of {self.element_count} rows unexpected"
        return f"{target}: {counts}; sample: {list(self.sample)!r}"


def ephemeral_context() -> Any:
    """An in-memory GX context with analytics and progress bars off (runs offline, logs stay readable)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def failures(result: Any) -> list[ExpectationFailure]:
    """The failed expectations of an ``ExpectationSuiteValidationResult``."""
    return [_failure(r) for r in result.results if not r.success]


def _failure(r: Any) -> ExpectationFailure:
    details = r.result or {}
    exception = exception_message(r.exception_info or {})
    kwargs = r.expectation_config.kwargs
    column = kwargs.get("column") or (",".join(kwargs["column_list"]) if kwargs.get("column_list") else None)
    detail = None
    if "observed_value" in details and details.get("unexpected_count") is None and not exception:
        detail = f"observed {plain_observed(details['observed_value'])}; expected {describe_expected(kwargs)}"
    return ExpectationFailure(
        expectation=r.expectation_config.type,
        column=column,
        detail=detail,
        unexpected_count=details.get("unexpected_count"),
        element_count=details.get("element_count"),
        sample=tuple(plain(v) for v in (details.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]),
        exception=exception,
    )


def plain_observed(value: Any) -> Any:
    return [plain(v) for v in value] if isinstance(value, list) else plain(value)


def describe_expected(kwargs: dict[str, Any]) -> str:
    shown = {k: v for k, v in kwargs.items() if k not in ("batch_id", "column", "result_format") and v is not None}
    return ", ".join(f"{k}={v!r}" for k, v in shown.items())


def exception_message(info: dict[str, Any]) -> str | None:
    """GX reports an exception either flat or keyed by metric; return the first message."""
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    for nested in info.values():
        if isinstance(nested, dict) and nested.get("raised_exception"):
            return str(nested.get("exception_message"))
    return None


def plain(value: Any) -> Any:
    """Values that print and serialise plainly: missing as None, timestamps as ISO strings, numpy as Python."""
    import pandas as pd

    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "tolist") and getattr(value, "ndim", 0):  # list-valued columns (recent_item_ids, ...)
        return [plain(v) for v in value.tolist()]
    return value.item() if hasattr(value, "item") else value


def file_context(root: Path) -> Any:
    """A file-backed GX context under ``root`` (suites, validation results, data docs site), analytics off."""
    import great_expectations as gx

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    root.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="file", project_root_dir=str(root))
    context.variables.progress_bars = {"globally": False}
    return context


def run_checkpoint(context: Any, suite: Any, frame: Any, run_name: str, build_docs: bool = True) -> Any:
    """Validate ``frame`` (one partition) against ``suite`` through a checkpoint; returns the suite result.

    The result is stored in the context's validation results store and, with ``build_docs``, rendered into
    the data docs site. Suite, asset and checkpoint are added or updated, so a re-run replaces them.
    """
    import great_expectations as gx
    import great_expectations.execution_engine.pandas_execution_engine as pandas_engine
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    # GX fingerprints every pandas batch under 1 GB with an md5 over all rows (~2 s per million rows here);
    # a partition is already identified by its table and day, so the gates skip that fingerprint.
    pandas_engine.HASH_THRESHOLD = 0
    datasource = context.data_sources.add_or_update_pandas(name=f"{suite.name}_partitions")
    batch = datasource.add_dataframe_asset(name=suite.name).add_batch_definition_whole_dataframe("partition")
    stored = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=stored)
    )
    actions = [UpdateDataDocsAction(name="update_data_docs")] if build_docs else []
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(name=suite.name, validation_definitions=[definition], actions=actions, result_format="SUMMARY")
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame}, run_id=RunIdentifier(run_name=run_name))
    return next(iter(result.run_results.values()))


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON aside, then rename into place (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
