"""Both DAGs on a tiny simulated week: recsys_features for a day and recsys_training for the week, through
`airflow dags test`, ending in a deployed bento that a real `bentoml serve` answers from.

The earlier days go through the same gated stage functions in this process (``recsys backfill``), which is
what the DAG runs for each day; the DAG itself runs for the last day, then the training DAG for the week.
"""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest

from fixtures_bert import write_tiny_bert
from recsys.config import Settings
from recsys.orchestration.local import run_features_day, run_training_week, task_states
from recsys.pipeline import backfill_features, run_dir
from recsys.registry.production import production_bento
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CFG = SimulationConfig(days=8, n_users=40, initial_items=60, new_items_per_day=5, sessions_per_user_day=2.0)
FIRST, LAST, WEEK = date(2026, 11, 1), date(2026, 11, 8), date(2026, 11, 2)  # Sunday 1 .. Sunday 8; Monday 2
K = 5


@pytest.fixture(scope="module")
def dag_runs(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("e2e")
    env = {
        "RECSYS_HOME": str(tmp / "home"),
        "RECSYS_MODEL__BERT_CHECKPOINT": str(write_tiny_bert(tmp / "tiny_bert")),
        "RECSYS_MODEL__MAX_LENGTH": "16",
        "RECSYS_MODEL__EPOCHS": "2",
        "RECSYS_MODEL__TOP_K": str(K),
    }
    for key, value in env.items():
        mp.setenv(key, value)
    settings = Settings()
    write_site(settings, simulate(CFG))
    for _ in backfill_features(settings, FIRST, date(2026, 11, 7)):
        pass
    run_features_day(settings, LAST, log_file=settings.home / "features.log")
    run_training_week(settings, WEEK, log_file=settings.home / "training.log")
    yield settings
    mp.undo()


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
