"""A task's data interval comes from its run's partition key, its conf or its data interval, never from now()."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace

import pytest

from recsys.errors import ConfigError
from recsys.orchestration.context import interval, period_start
from recsys.orchestration.local import last_complete_week


def run(partition_key: str | None = None, conf: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(partition_key=partition_key, conf=conf or {})


def test_a_scheduled_day_comes_from_the_partition_key() -> None:
    context = {"dag_run": run("2026-11-03"), "params": {"day": None}}
    assert interval(context, "day") == (datetime(2026, 11, 3, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC))


def test_a_rolled_up_week_key_and_its_label_parse_to_the_monday() -> None:
    assert period_start({"dag_run": run("2026-11-02")}, "week") == date(2026, 11, 2)
    assert period_start({"dag_run": run("2026-11-02 (W45)")}, "week") == date(2026, 11, 2)
    assert interval({"dag_run": run("2026-11-02")}, "week")[1] == datetime(2026, 11, 9, tzinfo=UTC)


def test_a_manual_run_names_its_period_in_the_conf_or_params() -> None:
    assert period_start({"dag_run": run(conf={"day": "2026-11-05"})}, "day") == date(2026, 11, 5)
    assert period_start({"dag_run": run(), "params": {"week": "2026-11-09"}}, "week") == date(2026, 11, 9)
    # the conf wins over a default param
    context = {"dag_run": run(conf={"day": "2026-11-06"}), "params": {"day": "2026-11-01"}}
    assert period_start(context, "day") == date(2026, 11, 6)


def test_a_data_interval_is_used_when_there_is_nothing_else() -> None:
    context = {
        "dag_run": run(),
        "data_interval_start": datetime(2026, 11, 7, tzinfo=UTC),
        "data_interval_end": datetime(2026, 11, 8, tzinfo=UTC),
    }
    assert period_start(context, "day") == date(2026, 11, 7)


def test_a_run_without_a_period_is_refused_with_what_to_pass() -> None:
    now = datetime(2026, 12, 3, tzinfo=UTC)
    context = {"dag_run": run(), "data_interval_start": now, "data_interval_end": now}  # a zero-length interval
    with pytest.raises(ConfigError, match=r'conf \{"day": "YYYY-MM-DD"\}'):
        interval(context, "day")


def test_a_week_must_start_on_a_monday_and_a_day_must_parse() -> None:
    with pytest.raises(ConfigError, match="2026-11-04 is a Wednesday"):
        period_start({"dag_run": run(conf={"week": "2026-11-04"})}, "week")
    with pytest.raises(ConfigError, match="expected a UTC day"):
        period_start({"dag_run": run("yesterday")}, "day")


def test_the_last_complete_week_of_a_range() -> None:
    assert last_complete_week(date(2026, 11, 1), date(2026, 11, 8)) == date(2026, 11, 2)  # Sun 1 .. Sun 8
    assert last_complete_week(date(2026, 11, 2), date(2026, 11, 14)) == date(2026, 11, 2)  # to Saturday 14
    assert last_complete_week(date(2026, 11, 3), date(2026, 11, 8)) is None
