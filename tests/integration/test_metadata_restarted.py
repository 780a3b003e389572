"""The Postgres metadata database restarted during a DAG run: the cluster recovers and the run completes.

A cluster of two Celery workers (``recsys cluster up``, private Redis broker) keeps its metadata (and the Celery
results) on a private PostgreSQL. ``recsys_features`` for one day is triggered through the REST API; while its
extract task runs (held inside its stage by a lock on the SQLite source), PostgreSQL is restarted with a fast
shutdown: every session of the scheduler, the DAG processor, the API server and the workers is terminated, and
the server is back a moment later. Expected: the run completes (every task succeeded), the scheduler and
workers are still up, and the day's partitions are byte-identical to an extraction of the same day in this
process (nothing written twice or half). Whether the scheduler outlives the restart depends on where its loop
was (Airflow retries some of its queries; a query cut off mid-flight makes it exit, as Airflow expects a process
manager to start it again): the test then kills the scheduler and checks that its supervisor
(``recsys.orchestration.supervise``) starts it again and the API reports it healthy.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from airflow_api import api_client, cluster_env, task_instance, task_instances, trigger, wait_for_dags, wait_for_runs

from recsys import lake
from recsys.config import Settings
from recsys.orchestration import cluster
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site
from servers import PostgresServer, free_port
from serving_fixtures import RedisServer
from week_runs import small_model_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.services, pytest.mark.timeout(1200)]
CFG = SimulationConfig(start=datetime(2026, 11, 6), days=1, n_users=20, initial_items=30, new_items_per_day=3)
DAY = CFG.start.date()
TIMEOUT_S = 600
METADATA_DB = "airflow"


def _files(settings: Settings) -> dict[str, str]:
    root = settings.lake / "raw"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def restarted_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("metadata_restart")
    broker, metadata = RedisServer(), PostgresServer()
    broker.start()
    metadata.start()
    try:
        metadata.create_database(METADATA_DB)
        with pytest.MonkeyPatch.context() as mp:
            env = {
                **cluster_env(tmp, METADATA_DB, broker.port, free_port()),
                "RECSYS_ORCHESTRATION__CLUSTER__METADATA_URL": metadata.url(METADATA_DB),
                "RECSYS_RETRIES__SOURCE__ATTEMPTS": "40",  # the locked source keeps the extract busy
                "RECSYS_RETRIES__SOURCE__MAX_BACKOFF_S": "2",
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
            yield _restart_mid_run(settings, metadata) | {"settings": settings, "reference": reference}
    finally:
        metadata.remove()
        broker.stop()


def _restart_mid_run(settings: Settings, metadata: PostgresServer) -> dict[str, Any]:
    deadline = time.monotonic() + TIMEOUT_S
    state = cluster.up(settings)
    lock = sqlite3.connect(settings.home / "source.db", isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # readers wait: the extract blocks inside its stage
        client = api_client(state["api_url"], settings.home)
        wait_for_dags(client, deadline)
        client.patch("/dags/recsys_features", json={"is_paused": False}).raise_for_status()
        run_id = f"features_{DAY}"
        trigger(client, "recsys_features", run_id, {"day": DAY.isoformat()}, DAY.isoformat())
        while task_instance(client, "recsys_features", run_id, "extract")["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.5)
        time.sleep(3)
        started = time.monotonic()
        metadata.restart()  # every session of every component is terminated
        down_s = time.monotonic() - started
        time.sleep(5)
        lock.execute("ROLLBACK")
        lock.close()
        client = api_client(state["api_url"], settings.home)
        wait_for_runs(client, "recsys_features", [run_id], deadline)
        run = client.get(f"/dags/recsys_features/dagRuns/{run_id}").json()
        outcome = {
            "run": run,
            "tasks": task_instances(client, "recsys_features", run_id),
            "components": cluster.status(settings),
            "restarts_after_run": cluster.restarts(settings),
            "down_s": down_s,
        }
        # Whether the scheduler survives a restart depends on where its loop was (a query cut off mid-flight makes
        # it exit). Make it exit: its supervisor must start it again and the API must see it healthy.
        supervisor = int((cluster.cluster_dir(settings) / "scheduler.pid").read_text())
        [scheduler] = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        os.kill(int(scheduler), signal.SIGKILL)
        while cluster.restarts(settings).get("scheduler", 0) < 1 or not _scheduler_healthy(state["api_url"]):
            assert time.monotonic() < deadline, cluster.status(settings)
            time.sleep(1)
        return outcome | {
            "restarts_after_kill": cluster.restarts(settings),
            "status_after_kill": cluster.status(settings),
        }
    finally:
        lock.close()
        cluster.down(settings)


def _scheduler_healthy(api_url: str) -> bool:
    import httpx

    try:
        health = httpx.get(f"{api_url}/api/v2/monitor/health", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return False
    return (health.get("scheduler") or {}).get("status") == "healthy"


def test_the_run_completes_after_the_restart(restarted_run: dict[str, Any]) -> None:
    assert restarted_run["run"]["state"] == "success", restarted_run["run"]
    assert {t["task_id"]: t["state"] for t in restarted_run["tasks"] if t["state"] != "success"} == {}


def test_the_components_are_still_up(restarted_run: dict[str, Any]) -> None:
    status = restarted_run["components"]
    assert status and all(state.startswith("running") for state in status.values()), status
    print(f"metadata down {restarted_run['down_s']:.1f} s; supervisor restarts: {restarted_run['restarts_after_run']}")


def test_a_scheduler_that_exits_is_started_again_by_its_supervisor(restarted_run: dict[str, Any]) -> None:
    assert (
        restarted_run["restarts_after_kill"]["scheduler"] == restarted_run["restarts_after_run"].get("scheduler", 0) + 1
    )
    assert restarted_run["status_after_kill"]["scheduler"].startswith("running")


def test_the_partitions_equal_an_extraction_without_the_restart(restarted_run: dict[str, Any]) -> None:
    ours, clean = _files(restarted_run["settings"]), _files(restarted_run["reference"])
    assert ours == clean and len(ours) == len(lake.RAW_TABLES)
