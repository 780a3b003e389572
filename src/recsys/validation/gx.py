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

    def describe(self) -> str:
        """One line: which expectation on which column, how many rows, a small sample."""
        target = f"{self.expectation}(column={self.column})" if self.column else self.expectation
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
    exception = _exception_message(r.exception_info or {})
    return ExpectationFailure(
        expectation=r.expectation_config.type,
        column=r.expectation_config.kwargs.get("column"),
        unexpected_count=details.get("unexpected_count"),
        element_count=details.get("element_count"),
        sample=tuple(_plain(v) for v in (details.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]),
        exception=exception,
    )


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX reports an exception either flat or keyed by metric; return the first message."""
    if "raised_exception" in info:
        return info.get("exception_message") if info.get("raised_exception") else None
    for nested in info.values():
        if isinstance(nested, dict) and nested.get("raised_exception"):
            return str(nested.get("exception_message"))
    return None


def _plain(value: Any) -> Any:
    """Values that print and serialise plainly: missing as None, timestamps as ISO strings, numpy as Python."""
    import pandas as pd

    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON aside, then rename into place (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    tmp.replace(path)
