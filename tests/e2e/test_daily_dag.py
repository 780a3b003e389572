"""The whole daily DAG on a tiny simulation, through `airflow dags test`, then a real `bentoml serve`."""

from __future__ import annotations

import json
from datetime import date

import pandas as pd
import pytest

from fixtures_bert import write_tiny_bert
from recsys.config import Settings
from recsys.ingest.extract import backfill
from recsys.orchestration.local import run_dag_test
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CFG = SimulationConfig(days=4, n_users=40, initial_items=60, new_items_per_day=5, sessions_per_user_day=2.0)
K = 5


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory: pytest.TempPathFactory) -> Settings:
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
    backfill(settings, date(2026, 11, 1), date(2026, 11, 3))
    run_dag_test(settings, date(2026, 11, 4), log_file=settings.home / "dag.log")
    yield settings
    mp.undo()


def test_every_stage_ran_for_the_interval(dag_run: Settings) -> None:
    stages = [json.loads(line)["stage"] for line in (dag_run.home / "timings.jsonl").read_text().splitlines()]
    assert stages == [
        "extract", "validate_raw", "dbt_build", "validate_marts", "feast_materialize", "encode_items",
        "train", "evaluate", "register", "gate", "build_bento",
    ]  # fmt: skip
    manifest = json.loads((dag_run.home / "runs" / "dt=2026-11-04" / "artifact" / "manifest.json").read_text())
    assert {"model", "popularity"} <= set(manifest["metrics"])
    assert manifest["data_interval_start"].startswith("2026-11-04")


def test_served_bento_returns_k_valid_items(dag_run: Settings) -> None:
    from recsys.demo import query_bento

    catalog = set(pd.read_parquet(dag_run.marts / "item_texts.parquet")["item_id"])
    known, unknown = 1, 10_000_000
    answers = query_bento(dag_run, [known, unknown], k=K, port=0)
    by_user = {a["user_id"]: a for a in answers}
    assert len(by_user[known]["items"]) == K
    assert set(by_user[known]["items"]) <= catalog
    assert by_user[known]["fallback"] is False
    assert len(by_user[unknown]["items"]) == K
    assert by_user[unknown]["fallback"] is True
    assert by_user[known]["model_version"] == by_user[unknown]["model_version"]
