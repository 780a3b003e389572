"""The raw events GX gate on tiny real partitions: passes clean data, fails loudly and readably otherwise."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from conftest_raw import event, item, utc, write_partition
from recsys.config import Settings
from recsys.errors import ValidationFailedError
from recsys.validation import raw_events_result_path, raw_events_suite, validate_raw_events

DAY = date(2024, 5, 1)
START, END = utc(2024, 5, 1), utc(2024, 5, 2)


def clean_rows() -> list[dict]:
    return [
        event("e1", 1, 10, "impression", utc(2024, 5, 1, 0, 0), position=0),
        event("e2", 1, 10, "click", utc(2024, 5, 1, 9, 1), position=None),
        event("e3", 2, 11, "rating", utc(2024, 5, 1, 23, 59), value=5.0),
        event("e4", 2, 11, "rating", utc(2024, 5, 1, 12), value=0.0),
    ]


@pytest.fixture(autouse=True)
def catalog(settings: Settings) -> None:
    """Items 10 and 11 exist (the events gate checks events against the catalog so far)."""
    write_partition(settings.lake, "items", DAY, [item(10, utc(2024, 5, 1)), item(11, utc(2024, 5, 1))])


def test_suite_factory_holds_the_contract_expectations() -> None:
    suite = raw_events_suite(START, END)
    kinds = {(e.expectation_type, getattr(e, "column", None)) for e in suite.expectations}
    assert ("expect_column_values_to_be_unique", "event_id") in kinds
    assert ("expect_column_values_to_be_in_set", "event_type") in kinds
    assert ("expect_column_values_to_be_between", "occurred_at") in kinds
    assert {c for k, c in kinds if k == "expect_column_values_to_not_be_null"} >= {"event_id", "user_id", "item_id"}


def test_clean_partition_passes_and_writes_result(settings: Settings) -> None:
    write_partition(settings.lake, "events", DAY, clean_rows())

    gate = validate_raw_events(settings, START, END)

    assert gate.success and not gate.failures
    assert gate.evaluated_expectations == gate.successful_expectations == 15
    assert gate.result_path == raw_events_result_path(settings, START)
    assert gate.result_path == settings.home / "validation" / "raw_events" / "dt=2024-05-01" / "result.json"
    assert json.loads(gate.result_path.read_text())["success"] is True


@pytest.mark.parametrize(
    ("bad_row", "expected"),
    [
        (event("bad", None, 10, "click", utc(2024, 5, 1, 8)), "expect_column_values_to_not_be_null(column=user_id)"),
        (event("bad", 1, None, "click", utc(2024, 5, 1, 8)), "expect_column_values_to_not_be_null(column=item_id)"),
        (event("bad", 1, 10, "click", END), "expect_column_values_to_be_between(column=occurred_at)"),
        (event("bad", 1, 10, "click", utc(2024, 4, 29, 23)), "expect_column_values_to_be_between(column=occurred_at)"),
        (event("bad", 1, 10, "bogus", utc(2024, 5, 1, 8)), "expect_column_values_to_be_in_set(column=event_type)"),
        (event("e1", 1, 10, "click", utc(2024, 5, 1, 8)), "expect_column_values_to_be_unique(column=event_id)"),
        (
            event("bad", 1, 10, "rating", utc(2024, 5, 1, 8), value=6.0),
            "expect_column_values_to_be_between(column=value)",
        ),
    ],
    ids=["null-user", "null-item", "at-interval-end", "before-interval", "bad-type", "duplicate-id", "rating-6"],
)
def test_bad_partition_fails_with_readable_summary(settings: Settings, bad_row: dict, expected: str) -> None:
    write_partition(settings.lake, "events", DAY, [*clean_rows(), bad_row])

    with pytest.raises(ValidationFailedError) as failure:
        validate_raw_events(settings, START, END)

    message = str(failure.value)
    failed_lines = [line for line in message.splitlines() if line.startswith("- ")]
    assert len(failed_lines) == 1, message
    assert expected in failed_lines[0]
    assert "of 5 rows unexpected" in failed_lines[0]
    assert "sample:" in failed_lines[0]
    assert json.loads(raw_events_result_path(settings, START).read_text())["success"] is False


def test_bad_event_type_sample_names_the_value(settings: Settings) -> None:
    write_partition(settings.lake, "events", DAY, [*clean_rows(), event("bad", 1, 10, "bogus", utc(2024, 5, 1, 8))])

    with pytest.raises(ValidationFailedError, match=r"1 of 5 rows unexpected; sample: \['bogus'\]"):
        validate_raw_events(settings, START, END)


def test_late_data_overlap_widens_the_accepted_window(settings: Settings) -> None:
    settings = settings.model_copy(update={"late_data_overlap": timedelta(hours=2)})
    write_partition(settings.lake, "events", DAY, [*clean_rows(), event("late", 1, 10, "click", utc(2024, 4, 30, 23))])

    assert validate_raw_events(settings, START, END).success


def test_missing_partition_says_to_extract_first(settings: Settings) -> None:
    with pytest.raises(ValidationFailedError, match="run the extract stage"):
        validate_raw_events(settings, START, END)


def test_reversed_interval_is_rejected(settings: Settings) -> None:
    with pytest.raises(ValueError, match="must be after"):
        validate_raw_events(settings, END, START)
