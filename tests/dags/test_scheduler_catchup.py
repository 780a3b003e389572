"""The scheduler owns backfills: a 14-day catchup of recsys_features through a real Airflow scheduler.

``airflow standalone`` (scheduler, DAG processor, LocalExecutor, SQLite metadata) runs the DAG's catchup from
``orchestration.start_date`` to ``orchestration.end_date``: 14 daily partitions, one at a time, in order. The
outcome must equal one full run of the same 14 days done at once (extract everything, one dbt build, one
materialization of the whole window): the same online values for every user and item, and no duplicate
partition, mart row or embedding.

dbt runs as one `dbt build` task here (``orchestration.dbt_tasks: single``): under the scheduler every task is a
process of its own, and the per-model cosmos group's 27 tasks cost ~4 s of start-up each (~3 min a day on 2
cores: 42 min for the catchup). The group itself runs end to end in tests/dags/test_dbt_group.py and
tests/e2e/test_dags.py.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from fixtures_bert import write_tiny_bert
from recsys import lake
from recsys.config import Settings
from recsys.orchestration.local import standalone, stop_group
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site
from servers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(2700)]  # measured 13-16 min on 2 cores
DAYS = 14
CFG = SimulationConfig(days=DAYS, n_users=15, initial_items=20, new_items_per_day=2, impressions_per_session=5)
FIRST = CFG.start.date()
LAST = FIRST + timedelta(days=DAYS - 1)
TIMEOUT_S = 2400


def _api(base: str, home: Path) -> httpx.Client:
    password = json.loads((home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    token = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=10).json()
    return httpx.Client(base_url=f"{base}/api/v2", headers={"Authorization": f"Bearer {token['access_token']}"})


def _wait_for_dag(base: str, home: Path, deadline: float) -> httpx.Client:
    while time.monotonic() < deadline:
        try:
            client = _api(base, home)
            if client.get("/dags/recsys_features").status_code == 200:
                return client
        except (httpx.TransportError, FileNotFoundError, KeyError, json.JSONDecodeError):
            pass
        time.sleep(3)
    raise AssertionError("recsys_features did not appear in the API")


def _runs(client: httpx.Client) -> list[dict[str, Any]]:
    answer = client.get("/dags/recsys_features/dagRuns", params={"limit": 100, "order_by": "start_date"})
    return answer.json()["dag_runs"]


def _catch_up(settings: Settings) -> list[dict[str, Any]]:
    port = free_port()
    process = standalone(settings, port)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        client = _wait_for_dag(f"http://127.0.0.1:{port}", settings.home, deadline)
        client.patch("/dags/recsys_features", json={"is_paused": False}).raise_for_status()
        while time.monotonic() < deadline:
            runs = _runs(client)
            if any(r["state"] == "failed" for r in runs):
                raise AssertionError(f"a catchup run failed: {[(r['partition_key'], r['state']) for r in runs]}")
            if len(runs) == DAYS and all(r["state"] == "success" for r in runs):
                return runs
            time.sleep(10)
        raise AssertionError(f"the catchup did not finish in {TIMEOUT_S} s: {len(_runs(client))} runs")
    finally:
        stop_group(process)


def _one_full_run(settings: Settings) -> None:
    """The 14 days at once: extract every day, one dbt build, encode, one materialization of the whole window."""
    from recsys.ingest.extract import backfill
    from recsys.pipeline import encode_stage, features_stage, transform_stage

    backfill(settings, FIRST, LAST)
    start, end = lake.day_start(FIRST), lake.day_start(LAST) + timedelta(days=1)
    transform_stage(settings, start, end)
    encode_stage(settings, start, end)
    features_stage(settings, start, end)


def _online(settings: Settings, users: list[int], items: list[int]) -> dict[str, dict[str, list[Any]]]:
    from recsys.features.store import feature_store, online_features

    store = feature_store(settings)
    name = settings.feature_service_name
    return {
        "user": online_features(store, f"{name}_user", [{"user_id": u} for u in users]),
        "item": online_features(store, f"{name}_item", [{"item_id": i} for i in items]),
    }


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, Settings, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("catchup")
    env = {
        "RECSYS_HOME": str(tmp / "scheduled"),
        "RECSYS_MODEL__BERT_CHECKPOINT": str(write_tiny_bert(tmp / "tiny_bert")),
        "RECSYS_MODEL__MAX_LENGTH": "16",
        "RECSYS_ORCHESTRATION__START_DATE": FIRST.isoformat(),
        "RECSYS_ORCHESTRATION__END_DATE": LAST.isoformat(),
        "RECSYS_ORCHESTRATION__DBT_TASKS": "single",
    }
    with pytest.MonkeyPatch.context() as mp:  # undone even when the catchup fails or times out
        for key, value in env.items():
            mp.setenv(key, value)
        site = simulate(CFG)
        scheduled = Settings()
        write_site(scheduled, site)
        runs = _catch_up(scheduled)
        reference = Settings(home=tmp / "reference")
        write_site(reference, site)
        _one_full_run(reference)
        yield scheduled, reference, runs


def test_the_scheduler_ran_every_day_once_in_order(homes) -> None:
    _, _, runs = homes
    keys = [r["partition_key"] for r in runs]
    assert keys == [(FIRST + timedelta(days=i)).isoformat() for i in range(DAYS)]
    starts = [pd.Timestamp(r["start_date"]) for r in runs]
    ends = [pd.Timestamp(r["end_date"]) for r in runs]
    assert all(ends[i] <= starts[i + 1] for i in range(DAYS - 1))  # one run at a time (max_active_runs=1)


def test_nothing_is_duplicated(homes) -> None:
    scheduled, _, _ = homes
    for table in lake.RAW_TABLES:
        assert list(lake.partitions(scheduled.lake, table)) == lake.days_between(FIRST, LAST), table
    interactions = pd.read_parquet(scheduled.marts / "interactions.parquet")
    assert interactions["event_id"].is_unique
    embeddings = pd.read_parquet(scheduled.embeddings_path)
    assert not embeddings.duplicated(["item_id", "content_hash"]).any()


def test_the_online_values_equal_one_full_run(homes) -> None:
    scheduled, reference, _ = homes
    site = simulate(CFG)
    users = sorted(u["user_id"] for u in site.users)
    items = sorted(i["item_id"] for i in site.items)
    assert pd.read_parquet(scheduled.marts / "interactions.parquet").equals(
        pd.read_parquet(reference.marts / "interactions.parquet")
    )
    ours, theirs = _online(scheduled, users, items), _online(reference, users, items)
    for side in ("user", "item"):
        assert sorted(ours[side]) == sorted(theirs[side]), side
        for column, values in ours[side].items():
            if column == "embedding":  # encoded day by day vs all at once: BLAS rounds a batch's GEMM by its size
                assert np.allclose(np.array(values), np.array(theirs[side][column]), rtol=0, atol=1e-6)
                continue
            assert json.dumps(values, default=str) == json.dumps(theirs[side][column], default=str), (side, column)
    assert any(v is not None for v in ours["user"]["user_clicks_28d"])  # the comparison is not of empty rows
