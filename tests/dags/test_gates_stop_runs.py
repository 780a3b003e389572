"""A corrupted partition fails the Airflow run of recsys_features at its gate, and nothing downstream runs.

The real DAG runs with ``airflow dags test`` on SQLite metadata, over a simulated site whose source rows for
one day carry injected corruption (null ids, and a retyped column whose rows extraction quarantines).
"""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from recsys import lake
from recsys.config import Settings
from recsys.errors import DagRunFailed
from recsys.orchestration.local import run_features_day, task_states
from recsys.sources.corruption import inject
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site

pytestmark = pytest.mark.slow
CFG = SimulationConfig(days=3, n_users=30, initial_items=40, new_items_per_day=5)
DAY = date(2026, 11, 2)
DOWNSTREAM = {"validate_marts", "encode_items", "materialize", "check_freshness"}


@pytest.fixture
def env_settings(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings the `airflow dags test` subprocess recreates from the environment."""
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    return Settings()


def test_a_corrupted_partition_fails_the_run_at_the_raw_gate(
    env_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a bounded schedule (as in a catchup): the day's run still creates its tasks (logical date: its own run)
    monkeypatch.setenv("RECSYS_ORCHESTRATION__END_DATE", (DAY + timedelta(days=1)).isoformat())
    site = simulate(CFG)
    write_site(env_settings, site, corruption=inject(site, ["null_ids", "retyped_column"], DAY))

    with pytest.raises(DagRunFailed) as failure:
        run_features_day(Settings(), DAY, log_file=env_settings.home / "features.log")

    assert failure.value.failed == ["validate_raw"]
    assert "\n  validate_raw: recsys.errors.ValidationFailedError: " in str(failure.value)  # the reason, not only where
    states = task_states(env_settings, "recsys_features")
    assert states["extract"] == "success"
    assert {task: states[task] for task in DOWNSTREAM} == dict.fromkeys(DOWNSTREAM, "upstream_failed")
    assert all(state == "upstream_failed" for task, state in states.items() if task.startswith("dbt"))
    # the refused events partition moved to quarantine, with the reasons; nothing reached the warehouse
    assert not lake.partition_path(env_settings.lake, "events", DAY).exists()
    attempts = list((env_settings.lake / "quarantine" / "gate" / "events" / lake.day_key(DAY)).glob("attempt-*"))
    summary = (attempts[0] / "summary.txt").read_text()
    assert "expect_column_values_to_not_be_null" in summary and "extracted_rows_quarantined_share" in summary
    assert not env_settings.marts.exists()
    log = (env_settings.home / "features.log").read_text()
    assert "ValidationFailedError" in log


def test_a_day_outside_the_schedule_is_refused_not_skipped(
    env_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow creates no task for a run outside the DAG's dates and calls the empty run a success."""
    monkeypatch.setenv("RECSYS_ORCHESTRATION__END_DATE", (DAY - timedelta(days=1)).isoformat())
    write_site(env_settings, simulate(CFG))

    with pytest.raises(DagRunFailed, match=r"created no task .* end_date 2026-11-01"):
        run_features_day(Settings(), DAY, log_file=env_settings.home / "features.log")

    assert not (env_settings.lake / "raw" / "events").exists()
