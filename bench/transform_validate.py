"""Benchmark: `dbt build` (DuckDB) and the raw GX gates on one day of 1 million synthetic events.

Run: ``uv run python -m bench.transform_validate``. The raw lake (1M events, 5k items, 20k users, one
partition each) is generated with vectorised numpy/pyarrow. Each measurement runs in a fresh subprocess so
its peak RSS is its own; figures are medians of the repeats. Reported: the events gate split into reading the
partition and validating it (GX checkpoint: suite, stored result, data docs), the items gate, and dbt build.
Beside the gate, each gate process validates the issue's reference (a plain suite of eight column
expectations on the same 1M-row frame, nothing stored) so the ratio holds however fast the machine is; the
reference runs second in its process, on warm imports, so the ratio errs against the gate.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EVENTS = 1_000_000
ITEMS = 5_000
USERS = 20_000
DAY = "2024-05-01"

GATE = """
import time, json, resource
t0 = time.perf_counter()
import great_expectations  # noqa: F401  (import cost reported apart)
imported = time.perf_counter() - t0
from datetime import datetime, timezone
from recsys.config import Settings
from recsys.validation import gates
from recsys.validation.raw_events import gate_raw_events
from recsys.validation.raw_items import gate_raw_items
s = Settings(home={home!r})
start, end = datetime(2024, 5, 1, tzinfo=timezone.utc), datetime(2024, 5, 2, tzinfo=timezone.utc)
seconds = {{}}
real_read, real_run = gates.read_raw_partition, gates.run_gate
def timed(name, fn):
    def wrapper(*a, **k):
        t = time.perf_counter(); out = fn(*a, **k); seconds[name] = seconds.get(name, 0) + time.perf_counter() - t
        return out
    return wrapper
import recsys.validation.raw_events as re_mod
re_mod.read_raw_partition = timed("read", real_read)
re_mod.run_gate = timed("validate", real_run)
t = time.perf_counter(); ev = gate_raw_events(s, start, end); events_total = time.perf_counter() - t
t = time.perf_counter(); it = gate_raw_items(s, start, end); items_total = time.perf_counter() - t
assert ev.success and it.success, ev.summary() + it.summary()
# The reference the issue quotes, side by side in this process: a plain GX suite of eight column
# expectations on the same 1M-row frame, ephemeral context, nothing stored, no data docs.
import great_expectations as gx, great_expectations.expectations as gxe
from recsys.validation.gx import ephemeral_context
from recsys.lake import partition_path
frame, _ = gates.read_raw_partition(partition_path(s.lake, "events", start), "events")
ctx = ephemeral_context()
batch = ctx.data_sources.add_pandas("ref").add_dataframe_asset("events").add_batch_definition_whole_dataframe("all")
suite = ctx.suites.add(gx.ExpectationSuite(name="reference", expectations=[
    gxe.ExpectColumnValuesToNotBeNull(column="event_id"), gxe.ExpectColumnValuesToBeUnique(column="event_id"),
    gxe.ExpectColumnValuesToNotBeNull(column="user_id"), gxe.ExpectColumnValuesToNotBeNull(column="item_id"),
    gxe.ExpectColumnValuesToBeInSet(
        column="event_type", value_set=["impression", "click", "rating", "like", "purchase", "tag"]),
    gxe.ExpectColumnValuesToNotBeNull(column="occurred_at"),
    gxe.ExpectColumnValuesToBeBetween(column="value", min_value=0, max_value=5),
    gxe.ExpectColumnValuesToBeBetween(column="position", min_value=0, max_value=100)]))
definition = ctx.validation_definitions.add(gx.ValidationDefinition(name="reference", data=batch, suite=suite))
t = time.perf_counter()
ref = definition.run(batch_parameters={{"dataframe": frame}})
reference = time.perf_counter() - t
assert ref.success
print(json.dumps({{"import_s": imported, "reference_8_expectations_s": reference,
    "events_read_s": seconds["read"], "events_validate_s": seconds["validate"],
    "events_gate_s": events_total, "items_gate_s": items_total, "expectations": ev.evaluated_expectations,
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

DBT = """
import time, json, resource
from recsys.config import Settings
from recsys.transform.dbt import build
s = Settings(home={home!r})
t = time.perf_counter(); result = build(s, full_refresh=True); seconds = time.perf_counter() - t
import pyarrow.parquet as pq
rows = pq.ParquetFile(s.marts / "interactions.parquet").metadata.num_rows
print(json.dumps({{"dbt_build_s": seconds, "interactions_rows": rows, "nodes": len(result.nodes),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def generate_lake(home: Path, events: int = EVENTS, seed: int = 0) -> None:
    """One day of synthetic raw events, items and users in the contract's exact Arrow schemas."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    ts = pa.timestamp("us", tz="UTC")
    day_us = np.datetime64(DAY, "us").astype(np.int64)
    interval = pa.array(np.full(events, day_us), ts)

    def write(table: str, data: pa.Table) -> None:
        path = home / "lake" / "raw" / table / f"dt={DAY}" / "part-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(data, path)

    kinds = np.array(["impression", "click", "rating", "like", "purchase", "tag"])
    kind = kinds[rng.choice(6, size=events, p=[0.8, 0.1, 0.05, 0.03, 0.01, 0.01])]
    is_rating = kind == "rating"
    write("events", pa.table({
        "event_id": pa.array(np.char.add("e", np.arange(events).astype(str))),
        "user_id": pa.array(rng.integers(1, USERS + 1, events)),
        "item_id": pa.array(rng.integers(1, ITEMS + 1, events)),
        "event_type": pa.array(kind),
        "value": pa.array(np.round(rng.uniform(0, 5, events), 1), mask=~is_rating),
        "session_id": pa.array(np.char.add("s", rng.integers(0, events // 10, events).astype(str))),
        "position": pa.array(rng.integers(0, 20, events).astype(np.int32), mask=rng.random(events) < 0.05),
        "occurred_at": pa.array(day_us + rng.integers(0, 86_400_000_000, events), ts),
        "received_at": pa.array(day_us + rng.integers(0, 86_400_000_000, events), ts),
        "_extra": pa.nulls(events, pa.string()),
        "_interval_start": interval,
    }))  # fmt: skip
    ids = np.arange(1, ITEMS + 1)
    write("items", pa.table({
        "item_id": pa.array(ids),
        "title": pa.array(np.char.add("Item ", ids.astype(str))),
        "body": pa.array(np.char.add("Body of item ", ids.astype(str))),
        "category": pa.array(np.array(["news", "sports", "tech"])[ids % 3]),
        "tags": pa.array([["a", "b"]] * ITEMS, pa.list_(pa.string())),
        "published_at": pa.array(np.full(ITEMS, day_us), ts),
        "updated_at": pa.array(day_us + ids * 1_000_000, ts),
        "_extra": pa.nulls(ITEMS, pa.string()),
        "_interval_start": interval[:ITEMS],
    }))  # fmt: skip


def _case(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark case failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(runs: list[dict], key: str) -> float:
    return round(statistics.median(r[key] for r in runs), 2)


def run(gate_repeats: int = 3, dbt_repeats: int = 2) -> dict:
    """Generate the lake, then time the gates and dbt build in fresh subprocesses (medians)."""
    home = Path(tempfile.mkdtemp(prefix="recsys-bench-tv-"))
    t = time.perf_counter()
    generate_lake(home)
    generated = time.perf_counter() - t
    gates = [_case(GATE.format(home=str(home))) for _ in range(gate_repeats)]
    builds = [_case(DBT.format(home=str(home))) for _ in range(dbt_repeats)]
    return {
        "events": EVENTS,
        "items": ITEMS,
        "generate_lake_s": round(generated, 2),
        "gx_import_s": _median(gates, "import_s"),
        "events_gate_read_s": _median(gates, "events_read_s"),
        "events_gate_validate_s": _median(gates, "events_validate_s"),
        "events_gate_total_s": _median(gates, "events_gate_s"),
        "reference_8_expectations_s": _median(gates, "reference_8_expectations_s"),
        "events_validate_vs_reference": round(
            statistics.median(r["events_validate_s"] / r["reference_8_expectations_s"] for r in gates), 2
        ),
        "events_gate_expectations": gates[0]["expectations"],
        "items_gate_total_s": _median(gates, "items_gate_s"),
        "gates_peak_rss_mib": round(max(r["peak_rss_mib"] for r in gates), 1),
        "dbt_build_s": _median(builds, "dbt_build_s"),
        "dbt_nodes": builds[0]["nodes"],
        "dbt_interactions_rows": builds[0]["interactions_rows"],
        "dbt_peak_rss_mib": round(max(r["peak_rss_mib"] for r in builds), 1),
        "repeats": {"gates": gate_repeats, "dbt": dbt_repeats},
    }


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
