"""Gates on more rows than fit in memory: validate bucket by bucket, merge the results into one verdict.

A gate whose rows exceed ``quality.chunk_rows`` does not load them into one pandas frame. Its suite is split
into passes, one per uniqueness key (``expect_column_values_to_be_unique`` or
``expect_compound_columns_to_be_unique``): the first pass carries every row-wise expectation and the first
key, each further pass one more key. A pass streams the rows once as Arrow record batches and spills them
into ``ceil(rows / chunk_rows)`` bucket files (Arrow IPC, LZ4) by a hash of the pass's key, so all copies of a
key share a bucket and a duplicate is found exactly as on the whole frame. Each bucket is then validated by
GX through the same checkpoint as a small partition, and the bucket results are merged: unexpected and
element counts add up, samples are taken from the first failing buckets, ``mostly`` is applied to the sums,
and table-level expectations (row counts) are evaluated once on the total row count. Peak memory is one
bucket plus one record batch, whatever the partition's size.
"""

from __future__ import annotations

import gc
import math
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.validation.gx import (
    SAMPLE_SIZE,
    ExpectationFailure,
    describe_expected,
    exception_message,
    plain,
    plain_observed,
    run_checkpoint,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

UNIQUE_TYPES = ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique")
ROW_COUNT_TYPE = "expect_table_row_count_to_be_between"


@dataclass(frozen=True)
class RowSource:
    """A gate's rows: their count, their Arrow schema, and a reader of record batches that can run again."""

    rows: int
    schema: pa.Schema
    read: Callable[[], Iterator[pa.RecordBatch]]
    to_pandas: Callable[[pa.Table], pd.DataFrame]

    def frame(self) -> pd.DataFrame:
        """Every row in one frame (for a source within ``chunk_rows``)."""
        import pyarrow as pa

        return self.to_pandas(pa.Table.from_batches(list(self.read()), schema=self.schema))


@dataclass(frozen=True)
class Pass:
    """Expectations validated together over one bucketing of the rows (``key`` None: rows dealt round robin)."""

    key: tuple[str, ...] | None
    expectations: tuple[Any, ...]


@dataclass
class _Merged:
    """One expectation's results over every bucket of its pass."""

    type: str
    kwargs: dict[str, Any]
    meta: dict[str, Any] | None
    success: bool = True
    map_metric: bool = False
    unexpected: int = 0
    elements: int = 0
    missing: int = 0
    sample: list[Any] = field(default_factory=list)
    observed: Any = None
    exception: str | None = None

    def add(self, r: Any) -> None:
        details = r.result or {}
        self.exception = self.exception or exception_message(r.exception_info or {})
        if details.get("unexpected_count") is not None:
            self.map_metric = True
            self.unexpected += int(details["unexpected_count"])
            self.elements += int(details.get("element_count") or 0)
            self.missing += int(details.get("missing_count") or 0)
            room = SAMPLE_SIZE - len(self.sample)
            if room > 0:
                self.sample += [plain(v) for v in (details.get("partial_unexpected_list") or [])[:room]]
        elif "observed_value" in details and (self.observed is None or not r.success):
            self.observed = plain_observed(details["observed_value"])
        if not self.map_metric:
            self.success = self.success and bool(r.success)

    def verdict(self) -> bool:
        if self.exception:
            return False
        if not self.map_metric:
            return self.success
        mostly = self.kwargs.get("mostly")
        if mostly is None:
            return self.unexpected == 0
        considered = self.elements - (0 if self.type == "expect_column_values_to_not_be_null" else self.missing)
        return considered == 0 or (considered - self.unexpected) / considered >= mostly

    def failure(self) -> ExpectationFailure:
        column = self.kwargs.get("column") or (
            ",".join(self.kwargs["column_list"]) if self.kwargs.get("column_list") else None
        )
        return ExpectationFailure(
            expectation=self.type,
            column=column,
            unexpected_count=self.unexpected if self.map_metric else None,
            element_count=self.elements if self.map_metric else None,
            sample=tuple(self.sample),
            exception=self.exception,
            detail=None
            if self.map_metric or self.exception
            else f"observed {self.observed}; expected {describe_expected(self.kwargs)}",
        )

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = (
            {
                "element_count": self.elements,
                "unexpected_count": self.unexpected,
                "missing_count": self.missing,
                "partial_unexpected_list": self.sample,
            }
            if self.map_metric
            else {"observed_value": self.observed}
        )
        return {
            "expectation_config": {"type": self.type, "kwargs": self.kwargs, "meta": self.meta or {}},
            "success": self.verdict(),
            "result": result,
            "exception_info": {"raised_exception": bool(self.exception), "exception_message": self.exception},
        }


@dataclass(frozen=True)
class ChunkedResult:
    """The merged verdict of a suite validated in buckets (the shape of a GX suite result, plus the plan)."""

    merged: tuple[_Merged, ...]
    rows: int
    chunk_rows: int
    passes: tuple[dict[str, Any], ...]

    @property
    def success(self) -> bool:
        return all(m.verdict() for m in self.merged)

    def failures(self) -> list[ExpectationFailure]:
        return [m.failure() for m in self.merged if not m.verdict()]

    def statistics(self) -> dict[str, int]:
        passed = sum(m.verdict() for m in self.merged)
        return {"evaluated_expectations": len(self.merged), "successful_expectations": passed}

    def to_json_dict(self) -> dict[str, Any]:
        stats = self.statistics()
        failed = stats["evaluated_expectations"] - stats["successful_expectations"]
        return {
            "success": self.success,
            "results": [m.as_dict() for m in self.merged],
            "statistics": {**stats, "unsuccessful_expectations": failed},
            "chunked": {"rows": self.rows, "chunk_rows": self.chunk_rows, "passes": list(self.passes)},
        }


def unique_key(expectation: Any) -> tuple[str, ...] | None:
    """The columns a uniqueness expectation keys on, else None."""
    kwargs = expectation.configuration.kwargs
    if expectation.expectation_type == "expect_column_values_to_be_unique":
        return (kwargs["column"],)
    if expectation.expectation_type == "expect_compound_columns_to_be_unique":
        return tuple(kwargs["column_list"])
    return None


def plan(suite: Any) -> tuple[list[Pass], list[Any]]:
    """The passes over the rows, and the table row-count expectations (evaluated on the total instead)."""
    row_counts = [e for e in suite.expectations if e.expectation_type == ROW_COUNT_TYPE]
    uniques = [e for e in suite.expectations if unique_key(e)]
    set_aside = {id(e) for e in (*row_counts, *uniques)}
    others = [e for e in suite.expectations if id(e) not in set_aside]
    first = Pass(unique_key(uniques[0]) if uniques else None, tuple([*others, *uniques[:1]]))
    return [first, *(Pass(unique_key(u), (u,)) for u in uniques[1:])], row_counts


def spill(batches: Iterator[pa.RecordBatch], key: tuple[str, ...] | None, buckets: int, folder: Path) -> list[Path]:
    """Write the rows into at most ``buckets`` Arrow IPC files, equal keys in the same file; returns the files.

    Key columns the batches lack (columns a gate derives later) are left out of the hash: rows equal on the
    whole key are equal on its part, so they still share a bucket.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.ipc as ipc

    folder.mkdir(parents=True, exist_ok=True)
    options = ipc.IpcWriteOptions(compression="lz4")
    writers: dict[int, Any] = {}
    dealt = 0
    try:
        for batch in batches:
            if not batch.num_rows:
                continue
            hashed = [c for c in key or () if c in batch.schema.names]
            if hashed:
                keys = batch.select(hashed).to_pandas()
                bucket = pd.util.hash_pandas_object(keys, index=False).to_numpy() % np.uint64(buckets)
            else:
                bucket = (np.arange(batch.num_rows) + dealt) % buckets
            dealt += batch.num_rows
            order = np.argsort(bucket, kind="stable")
            for rows in np.split(order, np.flatnonzero(np.diff(bucket[order])) + 1):
                b = int(bucket[rows[0]])
                if b not in writers:
                    writers[b] = ipc.new_file(str(folder / f"bucket-{b:05d}.arrow"), batch.schema, options=options)
                writers[b].write_batch(batch.take(pa.array(rows)))
    finally:
        for writer in writers.values():
            writer.close()
    return [folder / f"bucket-{b:05d}.arrow" for b in sorted(writers)]


def validate_in_buckets(
    context: Any,
    suite: Any,
    source: RowSource,
    *,
    chunk_rows: int,
    run_name: str,
    workdir: Path,
    derive: Callable[[pd.DataFrame], pd.DataFrame] = lambda frame: frame,
) -> ChunkedResult:
    """Validate ``source`` with ``suite`` bucket by bucket (see the module doc); data docs built once, at the end."""
    import great_expectations as gx
    import pyarrow as pa
    import pyarrow.ipc as ipc

    passes, row_counts = plan(suite)
    buckets = max(2, math.ceil(source.rows / chunk_rows))
    merged: list[_Merged] = []
    done: list[dict[str, Any]] = []
    workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{suite.name}-", dir=workdir) as tmp:
        for p, step in enumerate(passes):
            accs = {
                _identity(e.expectation_type, e.configuration.kwargs): _Merged(
                    e.expectation_type, dict(e.configuration.kwargs), e.meta
                )
                for e in step.expectations
            }
            sub = gx.ExpectationSuite(
                name=suite.name if p == 0 else f"{suite.name}__{'_'.join(step.key or ())}",
                expectations=[e.copy(update={"id": None}) for e in step.expectations],
            )
            files = spill(source.read(), step.key, buckets, Path(tmp) / f"pass-{p}")
            for b, path in enumerate(files):
                with pa.memory_map(str(path)) as mapped:
                    table = ipc.open_file(mapped).read_all()
                frame = derive(source.to_pandas(table))
                del table
                last = p == len(passes) - 1 and b == len(files) - 1
                result = run_checkpoint(
                    context, sub, frame, run_name=f"{run_name}-pass{p}-bucket{b:05d}", build_docs=last
                )
                del frame
                gc.collect()  # GX's validation objects hold the bucket's frame in reference cycles: free it now
                path.unlink()
                for r in result.results:
                    accs[_identity(r.expectation_config.type, r.expectation_config.kwargs)].add(r)
            merged += accs.values()
            done.append({"key": list(step.key or ()), "buckets": len(files), "expectations": len(accs)})
    merged += [_row_count(e, source.rows) for e in row_counts]
    return ChunkedResult(tuple(merged), source.rows, chunk_rows, tuple(done))


def _identity(kind: str, kwargs: dict[str, Any]) -> str:
    """An expectation's identity within a suite: its type and arguments (GX adds a ``batch_id`` to results)."""
    import json

    return kind + json.dumps({k: v for k, v in kwargs.items() if k != "batch_id"}, sort_keys=True, default=str)


def _row_count(expectation: Any, rows: int) -> _Merged:
    kwargs = dict(expectation.configuration.kwargs)
    lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
    ok = (lo is None or rows >= lo) and (hi is None or rows <= hi)
    return _Merged(expectation.expectation_type, kwargs, expectation.meta, success=ok, observed=rows)
