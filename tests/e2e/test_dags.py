"""Both DAGs on a tiny simulated week: recsys_features for a day and recsys_training for the week, through
`airflow dags test`, ending in a deployed bento that a real `bentoml serve` answers from.

The earlier days go through the same gated stage functions in this process (``recsys backfill``), which is
what the DAG runs for each day; the DAG itself runs for the last day, then the training DAG for the week.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recsys.config import Settings
from recsys.orchestration.local import task_states
from recsys.pipeline import run_dir
from recsys.registry.production import production_bento
from week_runs import WEEK, K, run_the_week, small_model_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def dag_runs(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp = tmp_path_factory.mktemp("e2e")
    with pytest.MonkeyPatch.context() as mp:  # undone even when the runs fail
        for key, value in {"RECSYS_HOME": str(tmp / "home"), **small_model_env(tmp)}.items():
            mp.setenv(key, value)
        settings = Settings()
        run_the_week(settings)
        yield settings


def test_every_task_of_both_dags_succeeded(dag_runs: Settings) -> None:
    features, training = task_states(dag_runs, "recsys_features"), task_states(dag_runs, "recsys_training")
    assert set(features.values()) == {"success"}, features
    assert set(training.values()) == {"success"}, training
    assert {"extract", "validate_raw", "validate_marts", "encode_items", "materialize", "check_freshness"} <= set(
        features
    )
    assert set(training) == {
        "training_set", "train", "evaluate", "register", "promote", "build_bento", "infra_validate", "deploy",
    }  # fmt: skip


def test_the_week_was_trained_evaluated_and_deployed(dag_runs: Settings) -> None:
    run = run_dir(dag_runs, pd.Timestamp(WEEK, tz="UTC").to_pydatetime())
    manifest = json.loads((run / "artifact" / "manifest.json").read_text())
    assert manifest["data_interval_start"].startswith("2026-11-02")
    assert manifest["data_interval_end"].startswith("2026-11-09")
    assert {"model", "popularity", "ease"} <= set(manifest["metrics"])
    assert (run / "report.html").is_file()
    assert production_bento(dag_runs) is not None


def test_the_deployed_bento_answers_known_and_unknown_users(dag_runs: Settings) -> None:
    from recsys.demo import query_bento

    catalog = set(pd.read_parquet(dag_runs.marts / "item_texts.parquet")["item_id"])
    known, unknown = 1, 10_000_000
    answers = query_bento(dag_runs, [known, unknown], k=K, port=0)
    by_user = {a["user_id"]: a for a in answers}
    assert len(by_user[known]["items"]) == K and set(by_user[known]["items"]) <= catalog
    assert by_user[known]["fallback"] is False
    assert len(by_user[unknown]["items"]) == K and by_user[unknown]["fallback"] is True
    assert by_user[known]["model_version"] == by_user[unknown]["model_version"]
