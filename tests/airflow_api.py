"""The Airflow REST API (v2) as the cluster tests drive it: a client with the admin's JWT, DAG runs triggered for a
partition, their task instances, and waits for the DAGs and for runs to end."""

from __future__ import annotations

import json
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx


def cluster_env(tmp: Path, metadata_db: str, broker_port: int, api_port: int) -> dict[str, str]:
    """The environment of a test cluster: its home under ``tmp``, Postgres metadata (database ``metadata_db``),
    the broker on a private Redis, the single dbt task, and a start date after the simulated days (unpausing starts
    no catchup: every run is one the test triggers)."""
    return {
        "RECSYS_HOME": str(tmp / "cluster_home"),
        "RECSYS_ORCHESTRATION__CLUSTER__METADATA_URL": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{metadata_db}",
        "RECSYS_ORCHESTRATION__CLUSTER__BROKER_URL": f"redis://127.0.0.1:{broker_port}/0",
        "RECSYS_ORCHESTRATION__CLUSTER__API_PORT": str(api_port),
        "RECSYS_ORCHESTRATION__DBT_TASKS": "single",
        "RECSYS_ORCHESTRATION__START_DATE": (date.today() + timedelta(days=30)).isoformat(),
    }


def task_instance(client: httpx.Client, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    answer = client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
    answer.raise_for_status()
    return answer.json()


def api_client(base: str, home: Path) -> httpx.Client:
    password = json.loads((home / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    token = httpx.post(f"{base}/auth/token", json={"username": "admin", "password": password}, timeout=10)
    token.raise_for_status()
    return httpx.Client(
        base_url=f"{base}/api/v2", headers={"Authorization": f"Bearer {token.json()['access_token']}"}, timeout=30
    )


def wait_for_dags(client: httpx.Client, deadline: float) -> None:
    while time.monotonic() < deadline:
        if all(client.get(f"/dags/{dag}").status_code == 200 for dag in ("recsys_features", "recsys_training")):
            return
        time.sleep(2)
    raise AssertionError("the DAG processor did not parse both DAGs in time")


def trigger(client: httpx.Client, dag_id: str, run_id: str, conf: dict[str, str], key: str) -> None:
    body = {"dag_run_id": run_id, "logical_date": None, "conf": conf, "partition_key": key}
    answer = client.post(f"/dags/{dag_id}/dagRuns", json=body)
    assert answer.status_code in (200, 201), answer.text


def task_instances(client: httpx.Client, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    answer = client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 200})
    answer.raise_for_status()
    return answer.json()["task_instances"]


def wait_for_runs(client: httpx.Client, dag_id: str, run_ids: list[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        states = {r: client.get(f"/dags/{dag_id}/dagRuns/{r}").json()["state"] for r in run_ids}
        failed = [r for r, s in states.items() if s == "failed"]
        if failed:
            tis = {r: {t["task_id"]: t["state"] for t in task_instances(client, dag_id, r)} for r in failed}
            raise AssertionError(f"{dag_id} runs failed: {tis}")
        if all(s == "success" for s in states.values()):
            return
        time.sleep(5)
    raise AssertionError(f"{dag_id} runs {run_ids} did not finish in time")
