"""A Celery worker killed mid-extract: the task is retried on the other worker, and no partial partition is left.

A cluster of two workers (``recsys cluster up``, fresh Postgres metadata, private Redis broker) runs
``recsys_features`` for one day, triggered through the REST API. The test holds an exclusive lock on the SQLite
source, so the extract task waits inside its stage (busy, retrying a locked source); once its log shows the stage
started, the test SIGKILLs the process group of the worker that runs it (the worker, its task supervisor and the
task). The scheduler finds the task without a heartbeat (``task_instance_heartbeat_timeout``, 20 s here), fails
that try, and the retry (after the DAG's 2 min retry delay) runs on the surviving worker. The run succeeds.
After the kill the lake held no partition of the day, only the killed try's temporary file (SIGKILL leaves it no
time to clean up); the retry removes it (its writer's pid is gone) and writes partitions byte-identical to an
extraction of the same day in this process, with no other file beside them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow_api import api_client, trigger, wait_for_dags, wait_for_runs

from recsys import lake
from recsys.config import Settings
from recsys.orchestration import cluster
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site
from servers import free_port, fresh_postgres_database
from serving_fixtures import RedisServer
from week_runs import small_model_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.services, pytest.mark.timeout(900)]
CFG = SimulationConfig(start=datetime(2026, 11, 6), days=1, n_users=20, initial_items=30, new_items_per_day=3)
DAY = CFG.start.date()
TIMEOUT_S = 600


def _files(settings: Settings) -> dict[str, str]:
    root = settings.lake / "raw"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _extract(client: Any, run_id: str) -> dict[str, Any]:
    answer = client.get(f"/dags/recsys_features/dagRuns/{run_id}/taskInstances/extract")
    answer.raise_for_status()
    return answer.json()


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("celery_kill")
    broker = RedisServer()
    broker.start()
    try:
        with fresh_postgres_database("recsys_celery_kill") as metadata, pytest.MonkeyPatch.context() as mp:
            env = {
                "RECSYS_HOME": str(tmp / "cluster_home"),
                "RECSYS_ORCHESTRATION__CLUSTER__METADATA_URL": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{metadata}",
                "RECSYS_ORCHESTRATION__CLUSTER__BROKER_URL": f"redis://127.0.0.1:{broker.port}/0",
                "RECSYS_ORCHESTRATION__CLUSTER__API_PORT": str(free_port()),
                "RECSYS_ORCHESTRATION__DBT_TASKS": "single",
                "RECSYS_ORCHESTRATION__START_DATE": (date.today() + timedelta(days=30)).isoformat(),
                # the locked source keeps the extract busy for minutes (each try waits out SQLite's 5 s busy timeout)
                "RECSYS_RETRIES__SOURCE__ATTEMPTS": "40",
                "RECSYS_RETRIES__SOURCE__MAX_BACKOFF_S": "2",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
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
        log = settings.home / "airflow" / "logs" / "dag_id=recsys_features" / f"run_id={run_id}" / "task_id=extract"
        while time.monotonic() < deadline:
            first = log / "attempt=1.log"
            if first.is_file() and "stage extract: start" in first.read_text(errors="replace"):
                break
            time.sleep(0.5)
        ti = _extract(client, run_id)
        assert ti["state"] == "running" and ti["try_number"] == 1, ti
        victim = ti["hostname"]
        pid = int((cluster.cluster_dir(settings) / f"{victim}.pid").read_text())
        os.killpg(pid, signal.SIGKILL)  # the worker, its supervisor and the task: no clean shutdown
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
