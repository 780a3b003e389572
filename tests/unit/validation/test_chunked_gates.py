"""Gates over more rows than ``quality.chunk_rows``: bucket by bucket, the same verdict as on one frame.

Every corruption of the gate table (test_corruption_gates.CASES) is caught the same way with buckets of two
rows; on a larger partition with planted faults (duplicates far apart, nulls, bad types) the merged failures
equal the whole-frame failures count for count; the spill keeps every row and puts equal keys together.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest
from test_corruption_gates import CASES, write_clean

from conftest_raw import event, item, utc, write_partition
from recsys.config import Settings
from recsys.errors import ValidationFailedError
from recsys.validation.chunked import plan, spill
from recsys.validation.raw_events import gate_raw_events
from recsys.validation.stages import validate_raw_stage
from recsys.validation.suites import raw_events_suite

DAY = date(2024, 5, 1)
START, END = utc(2024, 5, 1), utc(2024, 5, 2)


def chunked(settings: Settings, rows: int) -> Settings:
    return settings.model_copy(update={"quality": settings.quality.model_copy(update={"chunk_rows": rows})})


@pytest.mark.parametrize(("kind", "corrupt", "table", "expected"), CASES, ids=[c[0] for c in CASES])
def test_every_corruption_is_caught_in_buckets_of_two_rows(
    settings: Settings, kind: str, corrupt: Callable[[Settings], None], table: str, expected: str
) -> None:
    small = chunked(settings, 2)
    write_clean(small)
    corrupt(small)

    with pytest.raises(ValidationFailedError) as failure:
        validate_raw_stage(small, START, END)

    assert expected in str(failure.value), str(failure.value)


def planted_partition(settings: Settings) -> None:
    """400 clean events and planted faults: ids and one event repeated far apart, nulls, a bad type."""
    write_partition(settings.lake, "items", DAY, [item(i, utc(2024, 5, 1)) for i in range(10, 20)])
    rows = [
        event(f"e{i:04d}", i % 37, 10 + i % 10, "impression", utc(2024, 5, 1, i % 24, i % 60), position=i % 7)
        for i in range(400)
    ]
    rows[399] = {**rows[0], "event_id": "e0399"}  # the first event logged again under another id, 399 rows later
    rows[250] = {**rows[250], "event_id": "e0003"}  # an id used twice
    rows[100] = {**rows[100], "user_id": None}
    rows[300] = {**rows[300], "event_type": "bogus"}
    rows[301] = {**rows[301], "item_id": 999}  # not in the catalog
    rows += [event(f"t{i}", 1, 10, "tag", utc(2024, 5, 1, 11), position=None) for i in range(3)]  # exempt repeats
    write_partition(settings.lake, "events", DAY, rows)


def verdict(gate: object) -> list[tuple]:
    return sorted((f.expectation, f.column, f.unexpected_count, f.element_count) for f in gate.failures)


def test_merged_failures_equal_the_whole_frame_count_for_count(settings: Settings) -> None:
    planted_partition(settings)
    whole = gate_raw_events(settings, START, END)
    in_buckets = gate_raw_events(chunked(settings, 50), START, END)

    assert not whole.success and not in_buckets.success
    assert verdict(in_buckets) == verdict(whole)
    assert {f[:3] for f in verdict(whole)} == {
        ("expect_column_values_to_not_be_null", "user_id", 1),
        ("expect_column_values_to_be_unique", "event_id", 2),
        ("expect_column_values_to_be_in_set", "event_type", 1),
        ("expect_column_values_to_be_null", "unknown_item_id", 1),
        (
            "expect_compound_columns_to_be_unique",
            "user_id,item_id,event_type,session_id,position,occurred_at,duplicate_exempt_event_id",
            2,
        ),
    }
    assert (in_buckets.evaluated_expectations, in_buckets.successful_expectations) == (
        whole.evaluated_expectations,
        whole.successful_expectations,
    )
    stored = json.loads(in_buckets.result_path.read_text())
    assert stored["chunked"]["rows"] == 403
    assert [p["key"] for p in stored["chunked"]["passes"]] == [
        ["event_id"],
        ["user_id", "item_id", "event_type", "session_id", "position", "occurred_at", "duplicate_exempt_event_id"],
    ]
    assert all(p["buckets"] > 1 for p in stored["chunked"]["passes"])
    failing = next(r for r in stored["results"] if r["expectation_config"]["kwargs"].get("column") == "event_id"
                   and r["expectation_config"]["type"] == "expect_column_values_to_be_unique")  # fmt: skip
    assert sorted(failing["result"]["partial_unexpected_list"]) == ["e0003", "e0003"]


def test_a_clean_partition_passes_in_buckets_with_the_same_counts(settings: Settings) -> None:
    write_clean(settings)
    whole = gate_raw_events(settings, START, END)
    in_buckets = gate_raw_events(chunked(settings, 1), START, END)
    assert whole.success and in_buckets.success
    assert in_buckets.evaluated_expectations == in_buckets.successful_expectations == whole.evaluated_expectations


def test_row_counts_are_checked_once_on_the_total(settings: Settings) -> None:
    passes, row_counts = plan(raw_events_suite(START, END, previous_rows=1000))
    assert [e.expectation_type for e in row_counts] == ["expect_table_row_count_to_be_between"] * 2
    assert not any(e.expectation_type == "expect_table_row_count_to_be_between" for p in passes for e in p.expectations)
    assert sum(len(p.expectations) for p in passes) + len(row_counts) == len(
        raw_events_suite(START, END, previous_rows=1000).expectations
    )


def test_spill_keeps_every_row_and_puts_equal_keys_in_one_bucket(tmp_path: Path) -> None:
    keys = [f"k{i % 13}" for i in range(1000)]
    batches = [
        pa.record_batch({"key": keys[lo : lo + 64], "n": list(range(lo, min(lo + 64, 1000)))})
        for lo in range(0, 1000, 64)
    ]
    files = spill(iter(batches), ("key", "derived_later"), 5, tmp_path / "pass")

    seen: dict[str, set[int]] = {}
    rows = []
    for b, path in enumerate(files):
        table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
        rows += table.column("n").to_pylist()
        for key in set(table.column("key").to_pylist()):
            seen.setdefault(key, set()).add(b)
    assert sorted(rows) == list(range(1000))
    assert all(len(buckets) == 1 for buckets in seen.values())  # every copy of a key in one bucket
    assert 1 < len(files) <= 5
