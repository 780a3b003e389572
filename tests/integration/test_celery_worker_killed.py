"""A Celery worker killed mid-extract, and one killed mid-materialize: each time the task is retried on the other
worker, and neither a partial partition nor a mixed online state is left.

Each fault gets its own cluster of two workers (``recsys cluster up``, fresh Postgres metadata, private Redis
broker) running ``recsys_features`` for one day, triggered through the REST API. Once the task's log shows its
stage started, the test SIGKILLs the process group of the worker that runs it (the worker, its task supervisor
and the task). The scheduler finds the task without a heartbeat (``task_instance_heartbeat_timeout``, 20 s here),
fails that try, and the retry (after the DAG's 2 min retry delay) runs on the surviving worker. The run succeeds.

- Extract: the test holds an exclusive lock on the SQLite source, so the task waits inside its stage (busy,
  retrying a locked source). After the kill the lake held no partition of the day, only the killed try's
  temporary file (SIGKILL leaves it no time to clean up); the retry removes it (its writer's pid is gone) and
  writes partitions byte-identical to an extraction of the same day in this process, nothing else beside them.
- Materialize (Redis online store, a private server): once ``encode_items`` succeeded the test pauses every
  client's writes on the online Redis (``CLIENT PAUSE ... WRITE``), so the materialize task blocks inside its
  stage; it is killed there and the writes are unpaused. The online values afterwards equal those of the same
  day's stages run in this process on another Redis database, entity by entity and feature by feature.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from airflow_api import api_client, cluster_env, task_instance, trigger, wait_for_dags, wait_for_runs

from recsys import lake
from recsys.config import Settings
from recsys.orchestration import cluster
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site
from servers import free_port, fresh_postgres_database
from serving_fixtures import RedisServer
from week_runs import small_model_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.services, pytest.mark.timeout(1800)]
CFG = SimulationConfig(start=datetime(2026, 11, 6), days=1, n_users=20, initial_items=30, new_items_per_day=3)
DAY = CFG.start.date()
TIMEOUT_S = 600


def _files(settings: Settings) -> dict[str, str]:
    root = settings.lake / "raw"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _extract(client: Any, run_id: str) -> dict[str, Any]:
    return task_instance(client, "recsys_features", run_id, "extract")


def _wait_for_log(log: Path, line: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if log.is_file() and line in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise AssertionError(f"{line!r} not in {log} before the deadline")


def _kill_worker_of(settings: Settings, ti: dict[str, Any]) -> str:
    """SIGKILL the process group of the worker that runs ``ti``: the worker, its supervisor and the task."""
    victim = ti["hostname"]
    pid = int((cluster.cluster_dir(settings) / f"{victim}.pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    return victim


HEARTBEAT_ENV = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
}


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("celery_kill")
    broker = RedisServer()
    broker.start()
    try:
        with fresh_postgres_database("recsys_celery_kill") as metadata, pytest.MonkeyPatch.context() as mp:
            env = {
                **cluster_env(tmp, metadata, broker.port, free_port()),
                # the locked source keeps the extract busy for minutes (each try waits out SQLite's 5 s busy timeout)
                "RECSYS_RETRIES__SOURCE__ATTEMPTS": "40",
                "RECSYS_RETRIES__SOURCE__MAX_BACKOFF_S": "2",
                **HEARTBEAT_ENV,
                **small_model_env(tmp),
            }
            for key, value in env.items():
                mp.setenv(key, value)
            site = simulate(CFG)
            settings = Settings()
            write_site(settings, site)
            reference = Settings(home=tmp / "reference")
            write_site(reference, site)
            from recsys.ingest.extract import extract_all

            extract_all(reference, *lake.day_interval(DAY))
            yield _kill_mid_extract(settings) | {"settings": settings, "reference": reference}
    finally:
        broker.stop()


def _log(settings: Settings, run_id: str, task: str) -> Path:
    logs = settings.home / "airflow" / "logs" / "dag_id=recsys_features" / f"run_id={run_id}"
    return logs / f"task_id={task}" / "attempt=1.log"


def _kill_mid_extract(settings: Settings) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_S
    state = cluster.up(settings)
    source = settings.home / "source.db"
    lock = sqlite3.connect(source, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # readers wait: the extract blocks inside its stage
        client = api_client(state["api_url"], settings.home)
        wait_for_dags(client, deadline)
        client.patch("/dags/recsys_features", json={"is_paused": False}).raise_for_status()
        run_id = f"features_{DAY}"
        trigger(client, "recsys_features", run_id, {"day": DAY.isoformat()}, DAY.isoformat())
        _wait_for_log(_log(settings, run_id, "extract"), "stage extract: start", deadline)
        ti = _extract(client, run_id)
        assert ti["state"] == "running" and ti["try_number"] == 1, ti
        victim = _kill_worker_of(settings, ti)  # no clean shutdown
        time.sleep(2)
        files_after_kill = _files(settings)
        lock.execute("ROLLBACK")
        lock.close()
        wait_for_runs(client, "recsys_features", [run_id], deadline)
        return {"victim": victim, "files_after_kill": files_after_kill, "retry": _extract(client, run_id)}
    finally:
        lock.close()
        cluster.down(settings)


def test_the_retry_ran_on_the_other_worker(killed_run: dict[str, Any]) -> None:
    retry, victim = killed_run["retry"], killed_run["victim"]
    assert retry["state"] == "success" and retry["try_number"] >= 2, retry
    assert retry["hostname"] in cluster.worker_names(killed_run["settings"])
    assert retry["hostname"] != victim


def test_no_partial_partition_and_the_retry_wrote_the_clean_partitions(killed_run: dict[str, Any]) -> None:
    # the killed try left no partition (its temporary file, at most: SIGKILL leaves no time to remove it) ...
    after_kill = killed_run["files_after_kill"]
    assert all(Path(name).name.startswith(".part-0.parquet.tmp-") for name in after_kill), after_kill
    # ... and the retry removed that, and wrote exactly the partitions of an uninterrupted extraction
    ours, clean = _files(killed_run["settings"]), _files(killed_run["reference"])
    assert ours == clean and len(ours) == len(lake.RAW_TABLES)


# --- a worker killed mid-materialize ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def killed_materialize(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("celery_kill_materialize")
    broker, online = RedisServer(), RedisServer()
    broker.start()
    online.start()
    try:
        with fresh_postgres_database("recsys_celery_kill_mat") as metadata, pytest.MonkeyPatch.context() as mp:
            env = {
                **cluster_env(tmp, metadata, broker.port, free_port()),
                "RECSYS_ONLINE_STORE": "redis",
                "RECSYS_REDIS_URL": f"{online.url},db=1",
                **HEARTBEAT_ENV,
                **small_model_env(tmp),
            }
            for key, value in env.items():
                mp.setenv(key, value)
            site = simulate(CFG)
            settings = Settings()
            write_site(settings, site)
            reference = Settings(home=tmp / "reference", redis_url=f"{online.url},db=2")
            write_site(reference, site)
            from recsys.pipeline import backfill_features

            for _ in backfill_features(reference, DAY, DAY):
                pass
            yield _kill_mid_materialize(settings, online.port) | {"settings": settings, "reference": reference}
    finally:
        online.stop()
        broker.stop()


def _kill_mid_materialize(settings: Settings, online_port: int) -> dict[str, Any]:
    import redis

    deadline = time.monotonic() + TIMEOUT_S
    state = cluster.up(settings)
    online = redis.Redis(host="127.0.0.1", port=online_port, db=1)
    try:
        client = api_client(state["api_url"], settings.home)
        wait_for_dags(client, deadline)
        client.patch("/dags/recsys_features", json={"is_paused": False}).raise_for_status()
        run_id = f"features_{DAY}"
        trigger(client, "recsys_features", run_id, {"day": DAY.isoformat()}, DAY.isoformat())
        while (encode := task_instance(client, "recsys_features", run_id, "encode_items"))["state"] != "success":
            assert encode["state"] not in ("failed", "upstream_failed"), encode
            assert time.monotonic() < deadline, encode
            time.sleep(0.2)
        keys_before = online.dbsize()  # the item embeddings encode_items wrote
        online.execute_command("CLIENT", "PAUSE", str(TIMEOUT_S * 1000), "WRITE")  # every write now waits
        try:
            _wait_for_log(_log(settings, run_id, "materialize"), "stage feast_materialize: start", deadline)
            time.sleep(3)  # Feast apply, then the first write of the materialization: it waits on the pause
            ti = task_instance(client, "recsys_features", run_id, "materialize")
            assert ti["state"] == "running" and ti["try_number"] == 1, ti
            victim = _kill_worker_of(settings, ti)
            time.sleep(2)
            keys_at_kill = online.dbsize()
        finally:
            online.execute_command("CLIENT", "UNPAUSE")
        wait_for_runs(client, "recsys_features", [run_id], deadline)
        retry = task_instance(client, "recsys_features", run_id, "materialize")
        return {"victim": victim, "retry": retry, "keys_before": keys_before, "keys_at_kill": keys_at_kill}
    finally:
        cluster.down(settings)


def test_the_materialize_retry_ran_on_the_other_worker(killed_materialize: dict[str, Any]) -> None:
    retry, victim = killed_materialize["retry"], killed_materialize["victim"]
    assert retry["state"] == "success" and retry["try_number"] >= 2, retry
    assert retry["hostname"] in cluster.worker_names(killed_materialize["settings"])
    assert retry["hostname"] != victim


def test_the_online_store_equals_a_run_without_the_fault(killed_materialize: dict[str, Any]) -> None:
    from recsys.features.store import feature_store, online_features

    # the killed try wrote nothing (its writes waited on the pause): the store then held encode_items' rows only
    assert killed_materialize["keys_at_kill"] == killed_materialize["keys_before"] > 0
    site = simulate(CFG)
    users = sorted(u["user_id"] for u in site.users)
    items = sorted(i["item_id"] for i in site.items)
    values = {}
    for side in ("settings", "reference"):
        settings = killed_materialize[side]
        store, name = feature_store(settings), settings.feature_service_name
        values[side] = {
            "user": online_features(store, f"{name}_user", [{"user_id": u} for u in users]),
            "item": online_features(store, f"{name}_item", [{"item_id": i} for i in items]),
        }
    ours, theirs = values["settings"], values["reference"]
    for kind in ("user", "item"):
        assert sorted(ours[kind]) == sorted(theirs[kind]), kind
        for column, got in ours[kind].items():
            if column == "embedding":  # another process's BLAS may round a GEMM differently in the last bit
                assert np.allclose(np.array(got), np.array(theirs[kind][column]), rtol=0, atol=1e-6)
                continue
            assert json.dumps(got, default=str) == json.dumps(theirs[kind][column], default=str), (kind, column)
    assert any(v is not None for v in ours["user"]["user_clicks_28d"])  # the comparison is not of empty rows
