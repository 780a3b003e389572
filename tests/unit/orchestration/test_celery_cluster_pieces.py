"""The local CeleryExecutor cluster's pieces without servers: its environment, its components, ``down`` by pid
and ``up``'s error when a component dies (the whole cluster runs in tests/integration/test_celery_cluster.py)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from recsys.config import Settings
from recsys.errors import RecsysError
from recsys.orchestration import cluster


def _settings(tmp_path: Path, **cluster_settings: object) -> Settings:
    return Settings(home=tmp_path, orchestration={"cluster": cluster_settings})


def test_every_component_shares_the_executor_broker_metadata_and_secrets(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path, metadata_url="postgresql+psycopg2://postgres@127.0.0.1:5432/af", broker_url="redis://h:1/3"
    )
    env = cluster.cluster_env(settings)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == "postgresql+psycopg2://postgres@127.0.0.1:5432/af"
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"] == "db+postgresql+psycopg2://postgres@127.0.0.1:5432/af"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://h:1/3"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8080/execution/"
    assert env["RECSYS_HOME"] == str(tmp_path)
    again = cluster.cluster_env(settings)  # the api-server and every worker must agree on the JWT secret
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == again["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 32
    assert (tmp_path / "cluster" / "jwt_secret").stat().st_mode & 0o077 == 0


def test_the_workers_have_distinct_hostnames_that_their_tasks_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, workers=2)
    env = cluster.cluster_env(settings)
    workers = [c for c in cluster.components(settings, env) if c.args[:2] == ["celery", "worker"]]
    assert [c.name for c in workers] == ["recsys-worker-1", "recsys-worker-2"]
    for worker in workers:
        assert worker.args[worker.args.index("--celery-hostname") + 1] == worker.name
        assert worker.env[cluster.WORKER_HOSTNAME_ENV] == worker.name
    module, _, name = env["AIRFLOW__CORE__HOSTNAME_CALLABLE"].rpartition(".")
    hostname = getattr(__import__(module, fromlist=[name]), name)
    monkeypatch.setenv(cluster.WORKER_HOSTNAME_ENV, "recsys-worker-2")
    assert hostname() == "recsys-worker-2"
    monkeypatch.delenv(cluster.WORKER_HOSTNAME_ENV)
    assert hostname()  # elsewhere: the machine's name


def _start(settings: Settings, name: str, script: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(["bash", "-c", script], start_new_session=True)
    (settings.home / "cluster").mkdir(parents=True, exist_ok=True)
    (settings.home / "cluster" / f"{name}.pid").write_text(f"{process.pid}\n")
    return process


def _group_gone(pgid: int, timeout_s: float = 10.0) -> bool:
    """True once no process of the group exists (a killed grandchild is reaped by init a moment later)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_down_stops_each_process_group_by_its_pid_and_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    polite = _start(settings, "scheduler", "sleep 300 & wait")  # its child is in its group
    stubborn = _start(settings, "recsys-worker-1", "trap '' TERM; sleep 300 & wait; sleep 300")
    time.sleep(0.3)
    assert cluster.status(settings) == {
        "recsys-worker-1": f"running (pid {stubborn.pid})",
        "scheduler": f"running (pid {polite.pid})",
    }
    outcome = cluster.down(settings, timeout_s=1)
    assert outcome == {"recsys-worker-1": "killed", "scheduler": "stopped"}
    for process in (polite, stubborn):
        assert _group_gone(process.pid), process.pid  # no process of the group is left
    assert not list((tmp_path / "cluster").glob("*.pid"))
    assert cluster.down(settings) == {} and cluster.status(settings) == {}  # idempotent


def test_up_refuses_a_running_cluster(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    _start(settings, "scheduler", "sleep 300")
    try:
        with pytest.raises(RecsysError, match="cluster down"):
            cluster.up(settings)
    finally:
        cluster.down(settings, timeout_s=5)


def test_a_component_that_dies_while_starting_stops_the_rest_and_names_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(tmp_path, start_timeout_s=120)
    monkeypatch.setattr(cluster, "ensure_database", lambda url: None)
    monkeypatch.setattr("recsys.orchestration.local.prepare", lambda settings, env: None)

    def one(settings: Settings, env: dict[str, str]) -> list[cluster.Component]:
        return [cluster.Component("scheduler", ["no-such-command"], env)]

    monkeypatch.setattr(cluster, "components", one)
    with pytest.raises(RecsysError) as error:
        cluster.up(settings)
    message = str(error.value)
    assert "scheduler exited" in message and str(tmp_path / "cluster" / "logs" / "scheduler.log") in message
    assert not list((tmp_path / "cluster").glob("*.pid"))
