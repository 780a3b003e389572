"""Each corruption kind → the gate that catches it → the outcome; a clean interval passes.

CASES below is the table of docs/quality_gates.md: (kind, corruption, table whose gate catches it, the
expectation its summary names). Outcome for every kind: the stage raises ValidationFailedError naming the
expectation, counts and a sample; the partition moves whole to ``{lake}/quarantine/gate/<table>/dt=.../
attempt-.../`` beside its validation result (nothing lost); a re-run after the fix picks it up.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest_raw import event, item, partition_path, utc, write_partition
from recsys.config import Settings
from recsys.errors import ValidationFailedError
from recsys.validation.gates import data_docs_index
from recsys.validation.stages import validate_marts_stage, validate_raw_stage

DAY = date(2024, 5, 1)
START, END = utc(2024, 5, 1), utc(2024, 5, 2)


def clean_events() -> list[dict]:
    return [
        event("e1", 1, 10, "impression", utc(2024, 5, 1, 9), session_id="s1", position=0),
        event("e2", 1, 10, "click", utc(2024, 5, 1, 9, 1), session_id="s1", position=0),
        event("e3", 2, 11, "impression", utc(2024, 5, 1, 10), session_id="s2", position=1),
        event("e4", 2, 11, "rating", utc(2024, 5, 1, 12), value=4.0, session_id="s2", position=None),
    ]


def write_clean(settings: Settings) -> None:
    write_partition(settings.lake, "items", DAY, [item(10, utc(2024, 5, 1)), item(11, utc(2024, 5, 1, 6))])
    write_partition(settings.lake, "events", DAY, clean_events())


def with_rows(*rows: dict) -> Callable[[Settings], None]:
    return lambda s: write_partition(s.lake, "events", DAY, [*clean_events(), *rows])


def rewrite_events(change: Callable[[pa.Table], pa.Table]) -> Callable[[Settings], None]:
    def corrupt(settings: Settings) -> None:
        path = partition_path(settings.lake, "events", DAY)
        pq.write_table(change(pq.read_table(path)), path)

    return corrupt


def collapsed_day(settings: Settings) -> None:
    previous = [event(f"p{i}", 1, 10, "impression", utc(2024, 4, 30, 1, i % 60), position=i % 10) for i in range(200)]
    write_partition(settings.lake, "events", DAY - timedelta(days=1), previous)


renamed = rewrite_events(lambda t: t.rename_columns(["uid" if n == "user_id" else n for n in t.column_names]))
retyped = rewrite_events(
    lambda t: t.set_column(1, pa.field("user_id", pa.string()), t.column("user_id").cast(pa.string()))
)

# kind, corruption, table whose gate catches it, expectation named in the summary
CASES = [
    ("null ids", with_rows(event("n1", None, 10, "click", utc(2024, 5, 1, 8))), "events",
     "expect_column_values_to_not_be_null(column=user_id): 1 of 5 rows unexpected"),
    ("duplicate event", with_rows(event("e1-again", 1, 10, "impression", utc(2024, 5, 1, 9), position=0)), "events",
     "expect_compound_columns_to_be_unique(column=user_id,item_id,event_type,session_id,position,occurred_at,"
     "duplicate_exempt_event_id): 2 of"),
    ("future timestamp", with_rows(event("f1", 1, 10, "click", utc(2099, 1, 1))), "events",
     "expect_column_values_to_be_between(column=occurred_at): 1 of 5 rows unexpected"),
    ("outside the interval", with_rows(event("o1", 1, 10, "click", utc(2024, 4, 28, 23))), "events",
     "expect_column_values_to_be_between(column=occurred_at): 1 of 5 rows unexpected"),
    ("unknown item", with_rows(event("u1", 1, 999, "click", utc(2024, 5, 1, 8))), "events",
     "expect_column_values_to_be_null(column=unknown_item_id): 1 of 5 rows unexpected; sample: [999]"),
    ("renamed column", renamed, "events", "expect_table_columns_to_match_set: observed"),
    ("retyped column", retyped, "events",
     "arrow_type_matches_contract(column=user_id): Arrow type is string, the contract (docs/contracts.md) says int64"),
    ("empty interval", lambda s: write_partition(s.lake, "events", DAY, []), "events",
     "expect_table_row_count_to_be_between: observed 0"),
    ("row count collapse", collapsed_day, "events", "expect_table_row_count_to_be_between: observed 4; expected"),
    ("null item id", lambda s: write_partition(s.lake, "items", DAY, [item(10, START), item(None, START)]),
     "items", "expect_column_values_to_not_be_null(column=item_id): 1 of 2 rows unexpected"),
]  # fmt: skip


def quarantined(settings: Settings, table: str) -> list[Path]:
    return sorted((settings.lake / "quarantine" / "gate" / table / f"dt={DAY}").glob("attempt-*"))


def test_clean_interval_passes_and_stores_results_and_docs(settings: Settings) -> None:
    write_clean(settings)

    summary = validate_raw_stage(settings, START, END)

    assert {t: g["success"] for t, g in summary["gates"].items()} == {"items": True, "events": True}
    assert not (settings.lake / "quarantine").exists()
    assert partition_path(settings.lake, "events", DAY).is_file()
    assert data_docs_index(settings).is_file()
    stored = list((settings.home / "gx" / "gx" / "uncommitted" / "validations").rglob("*.json"))
    assert len(stored) == 2  # one stored validation result per gate


def test_repeated_tags_at_one_instant_are_not_duplicates(settings: Settings) -> None:
    write_clean(settings)
    tags = [event(f"t{i}", 1, 10, "tag", utc(2024, 5, 1, 11), session_id="s1", position=None) for i in range(3)]
    with_rows(*tags)(settings)

    summary = validate_raw_stage(settings, START, END)

    assert summary["gates"]["events"]["success"], summary


@pytest.mark.parametrize(("kind", "corrupt", "table", "expected"), CASES, ids=[c[0] for c in CASES])
def test_corruption_is_caught_by_its_gate_and_quarantined(
    settings: Settings, kind: str, corrupt: Callable[[Settings], None], table: str, expected: str
) -> None:
    write_clean(settings)
    corrupt(settings)
    original = pq.read_table(partition_path(settings.lake, table, DAY))

    with pytest.raises(ValidationFailedError) as failure:
        validate_raw_stage(settings, START, END)

    message = str(failure.value)
    assert expected in message, message
    assert "partition moved to quarantine" in message
    [attempt] = quarantined(settings, table)
    assert not partition_path(settings.lake, table, DAY).exists()
    assert pq.read_table(attempt / "part-0.parquet").equals(original)  # nothing lost
    assert json.loads((attempt / "validation_result.json").read_text())["success"] is False
    assert expected in (attempt / "summary.txt").read_text()
    other = "items" if table == "events" else "events"
    if kind not in ("unknown item",):
        assert partition_path(settings.lake, other, DAY).is_file() or table == "items"


@pytest.mark.slow
def test_rerun_after_a_fix_picks_the_partition_up(settings: Settings) -> None:
    from recsys.transform.dbt import build

    write_clean(settings)
    with_rows(event("n1", None, 10, "click", utc(2024, 5, 1, 8)))(settings)
    with pytest.raises(ValidationFailedError):
        validate_raw_stage(settings, START, END)
    assert not partition_path(settings.lake, "events", DAY).exists()

    write_partition(settings.lake, "events", DAY, clean_events())  # what a re-extraction after the fix writes
    assert validate_raw_stage(settings, START, END)["gates"]["events"]["success"]
    build(settings, interval=(START, END))
    summary = validate_marts_stage(settings, START, END)

    assert all(g["success"] for g in summary["gates"].values())
    assert len(quarantined(settings, "events")) == 1  # the failed attempt is kept
    fct = pq.read_table(settings.marts / "interactions.parquet")
    assert sorted(fct.column("event_id").to_pylist()) == ["e1", "e2", "e3", "e4"]


@pytest.mark.slow
def test_mart_gate_stops_on_bad_mart_rows(settings: Settings) -> None:
    from recsys.transform.dbt import build

    write_clean(settings)
    build(settings)
    texts = pq.read_table(settings.marts / "item_texts.parquet")
    broken = texts.set_column(texts.column_names.index("content_hash"), "content_hash", pa.array(["x"] * len(texts)))
    pq.write_table(broken, settings.marts / "item_texts.parquet")

    with pytest.raises(ValidationFailedError, match=r"expect_column_value_lengths_to_equal\(column=content_hash\)"):
        validate_marts_stage(settings, START, END)
