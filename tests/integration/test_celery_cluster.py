"""CeleryExecutor, for real: both DAGs on a local cluster (``recsys cluster up``) equal an embedded run.

The cluster is the one ``recsys cluster up`` starts: a fresh Postgres database as the Airflow metadata (and the
Celery result backend), a private Redis as the broker, the scheduler, the DAG processor, the API server and two
Celery workers (``recsys-worker-1``/``-2``), each a process group with its pid file and log under
``{home}/cluster``. Through the REST API the test triggers ``recsys_features`` for three consecutive days, then
``recsys_training`` for the week, waits for success and checks that the tasks ran on both workers (the task
instances' ``hostname``). The outputs must equal the same three days run through the stage functions in this
process (``backfill_features``, what ``recsys backfill`` runs): raw partitions byte for byte, the marts row for
row, the online values. Training: the run succeeded and its model artifact exists. ``down`` always runs, and
leaves no process of the cluster behind.

``orchestration.start_date`` lies after the simulated days, so unpausing the DAGs starts no catchup: the runs
are the API's, each for its day or week (conf and partition key), with no logical date. dbt runs as one task
(``orchestration.dbt_tasks: single``), as in test_scheduler_catchup.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from airflow_api import api_client, cluster_env, task_instances, trigger, wait_for_dags, wait_for_runs

from recsys import lake
from recsys.config import Settings
from recsys.orchestration import cluster
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site
from servers import free_port, fresh_postgres_database
from serving_fixtures import RedisServer
from week_runs import small_model_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.services, pytest.mark.timeout(1200)]
# Friday 6 .. Sunday 8 November: the last three days of the ISO week starting Monday 2 November
CFG = SimulationConfig(
    start=datetime(2026, 11, 6), days=3, n_users=40, initial_items=60, new_items_per_day=5, sessions_per_user_day=2.0
)
FIRST = CFG.start.date()
DAYS = [FIRST + timedelta(days=i) for i in range(CFG.days)]
WEEK = date(2026, 11, 2)
TIMEOUT_S = 900


def _run_on_cluster(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Both DAGs through the REST API; ``{run_id: its task instances}``. The cluster is down on return."""
    deadline = time.monotonic() + TIMEOUT_S
    state = cluster.up(settings)
    pids = list(state["pids"].values())
    try:
        client = api_client(state["api_url"], settings.home)
        wait_for_dags(client, deadline)
        client.patch("/dags/recsys_features", json={"is_paused": False}).raise_for_status()
        features = [f"features_{day}" for day in DAYS]
        for day, run_id in zip(DAYS, features, strict=True):
            trigger(client, "recsys_features", run_id, {"day": day.isoformat()}, day.isoformat())
        wait_for_runs(client, "recsys_features", features, deadline)
        client.patch("/dags/recsys_training", json={"is_paused": False}).raise_for_status()
        training = f"training_{WEEK}"
        trigger(client, "recsys_training", training, {"week": WEEK.isoformat()}, WEEK.isoformat())
        wait_for_runs(client, "recsys_training", [training], deadline)
        runs = {r: task_instances(client, "recsys_features", r) for r in features}
        runs[training] = task_instances(client, "recsys_training", training)
        return runs
    finally:
        cluster.down(settings)
        left = [pid for pid in pids if _exists(pid)]
        assert not left, f"cluster processes still running after down: {left}"
        assert not list(cluster.cluster_dir(settings).glob("*.pid"))


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Settings, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("celery")
    broker = RedisServer()
    broker.start()
    try:
        with fresh_postgres_database("recsys_celery") as metadata, pytest.MonkeyPatch.context() as mp:
            env = {**cluster_env(tmp, metadata, broker.port, free_port()), **small_model_env(tmp)}
            for key, value in env.items():
                mp.setenv(key, value)
            site = simulate(CFG)
            on_cluster = Settings()
            write_site(on_cluster, site)
            started = time.monotonic()
            task_instances = _run_on_cluster(on_cluster)
            cluster_s = time.monotonic() - started
            embedded = Settings(home=tmp / "embedded")
            write_site(embedded, site)
            from recsys.pipeline import backfill_features

            for _ in backfill_features(embedded, DAYS[0], DAYS[-1]):
                pass
            print(f"cluster run: {cluster_s:.0f} s")
            yield on_cluster, embedded, task_instances
    finally:
        broker.stop()


def test_tasks_ran_on_both_workers(runs) -> None:
    _, _, task_instances = runs
    every = [ti for tis in task_instances.values() for ti in tis]
    assert {ti["state"] for ti in every} == {"success"}
    assert {ti["hostname"] for ti in every} == set(cluster.worker_names(runs[0])), every
    assert all(ti["executor"] in (None, "CeleryExecutor") for ti in every if "executor" in ti)


def test_the_model_artifact_exists(runs) -> None:
    on_cluster, _, task_instances = runs
    assert any(ti["task_id"] == "train" for ti in task_instances[f"training_{WEEK}"])
    from recsys.pipeline import run_dir

    artifact = run_dir(on_cluster, lake.day_start(WEEK)) / "artifact"
    assert (artifact / "user_tower.keras").is_file(), f"no model artifact at {artifact}"
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["data_interval_start"] == lake.day_start(WEEK).isoformat()


def _digests(settings: Settings) -> dict[str, str]:
    root = settings.lake / "raw"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*.parquet")}


def test_raw_partitions_are_byte_identical(runs) -> None:
    on_cluster, embedded, _ = runs
    ours = _digests(on_cluster)
    assert len(ours) == len(lake.RAW_TABLES) * len(DAYS), sorted(ours)
    assert ours == _digests(embedded)


def test_the_marts_equal_row_for_row(runs) -> None:
    on_cluster, embedded, _ = runs
    names = sorted(p.name for p in embedded.marts.glob("*.parquet"))
    assert names and names == sorted(p.name for p in on_cluster.marts.glob("*.parquet"))
    for name in names:
        ours, theirs = pd.read_parquet(on_cluster.marts / name), pd.read_parquet(embedded.marts / name)
        assert list(ours.columns) == list(theirs.columns), name
        key = [c for c in ours.columns if not isinstance(ours[c].iloc[0] if len(ours) else 0, (list, np.ndarray))]
        ours = ours.sort_values(key).reset_index(drop=True)
        theirs = theirs.sort_values(key).reset_index(drop=True)
        pd.testing.assert_frame_equal(ours, theirs, check_exact=True, obj=name)


def _online(settings: Settings, users: list[int], items: list[int]) -> dict[str, dict[str, list[Any]]]:
    from recsys.features.store import feature_store, online_features

    store = feature_store(settings)
    name = settings.feature_service_name
    return {
        "user": online_features(store, f"{name}_user", [{"user_id": u} for u in users]),
        "item": online_features(store, f"{name}_item", [{"item_id": i} for i in items]),
    }


def test_the_online_values_are_equal(runs) -> None:
    on_cluster, embedded, _ = runs
    site = simulate(CFG)
    users = sorted(u["user_id"] for u in site.users)
    items = sorted(i["item_id"] for i in site.items)
    ours, theirs = _online(on_cluster, users, items), _online(embedded, users, items)
    for side in ("user", "item"):
        assert sorted(ours[side]) == sorted(theirs[side]), side
        for column, values in ours[side].items():
            if column == "embedding":  # another process's BLAS may round a GEMM differently in the last bit
                assert np.allclose(np.array(values), np.array(theirs[side][column]), rtol=0, atol=1e-6)
                continue
            assert json.dumps(values, default=str) == json.dumps(theirs[side][column], default=str), (side, column)
    assert any(v is not None for v in ours["user"]["user_clicks_28d"])  # the comparison is not of empty rows
