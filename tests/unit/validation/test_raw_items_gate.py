"""The raw items gate on change capture: the first partition holds the catalog, later ones only what changed."""

from __future__ import annotations

from datetime import date

from conftest_raw import item, utc, write_partition
from recsys.config import Settings
from recsys.lake import day_interval
from recsys.validation.raw_items import gate_raw_items


def test_a_day_of_few_changed_items_after_the_initial_catalog_passes(settings: Settings) -> None:
    write_partition(settings.lake, "items", date(2026, 11, 1), [item(i, utc(2026, 11, 1, 0)) for i in range(300)])
    write_partition(settings.lake, "items", date(2026, 11, 2), [item(i, utc(2026, 11, 2, 0)) for i in range(300, 320)])

    gate = gate_raw_items(settings, *day_interval(date(2026, 11, 2)))

    assert gate.success, gate.summary()


def test_a_day_with_far_more_item_versions_than_the_day_before_fails(settings: Settings) -> None:
    write_partition(settings.lake, "items", date(2026, 11, 1), [item(i, utc(2026, 11, 1, 0)) for i in range(100)])
    write_partition(settings.lake, "items", date(2026, 11, 2), [item(i, utc(2026, 11, 2, 0)) for i in range(600)])

    gate = gate_raw_items(settings, *day_interval(date(2026, 11, 2)))

    assert not gate.success
    assert "expect_table_row_count_to_be_between: observed 600; expected" in gate.summary()
    assert "max_value=500" in gate.summary()
