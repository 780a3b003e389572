"""A local CeleryExecutor cluster: Airflow's components as processes on this machine (``recsys cluster up|down``).

Postgres holds the metadata (and the Celery results), Redis or RabbitMQ is the broker; the scheduler, the DAG
processor, the API server (REST API, UI and the execution API the task processes report to) and
``orchestration.cluster.workers`` Celery workers each run as a process group of their own, under a supervisor
that starts the component again when it exits on its own (``recsys.orchestration.supervise``: the scheduler exits
when its metadata database restarts). Their pid files, restart counts and logs are under ``{home}/cluster``;
``down`` stops each by its pid. The same DAG files and settings as the embedded
mode: only the ``AIRFLOW__*`` environment differs.

This module is imported by every task process (``worker_hostname`` is Airflow's ``hostname_callable``): keep its
top-level imports to the standard library.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger(__name__)
WORKER_HOSTNAME_ENV = "RECSYS_CLUSTER_WORKER"
_READY = " ready."  # celery's "celery@<hostname> ready." line in a worker's log


def worker_hostname() -> str:
    """Airflow's ``core.hostname_callable`` in the cluster: the Celery worker's name (``recsys-worker-N``), so a
    task instance's ``hostname`` tells which of the workers on this one machine ran it; elsewhere the FQDN."""
    return os.environ.get(WORKER_HOSTNAME_ENV) or socket.getfqdn()


@dataclass(frozen=True)
class Component:
    name: str
    args: list[str]
    env: dict[str, str]


def cluster_dir(settings: Settings) -> Path:
    return settings.home / "cluster"


def api_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.orchestration.cluster.api_port}"


def worker_names(settings: Settings) -> list[str]:
    return [f"recsys-worker-{i}" for i in range(1, settings.orchestration.cluster.workers + 1)]


def _secret(folder: Path, name: str) -> str:
    """A secret shared by every component of the cluster (the JWT key the API server signs task tokens with and
    the workers' task processes present), made once per cluster folder, readable by its owner only."""
    path = folder / name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def result_backend(metadata_url: str) -> str:
    """Celery's database result backend on the metadata database (``db+`` + its SQLAlchemy URL)."""
    return f"db+{metadata_url}"


def cluster_env(settings: Settings) -> dict[str, str]:
    """The environment every component shares: :func:`recsys.orchestration.local.airflow_env` with the Celery
    executor, the cluster's metadata database and broker, and the API server's address and secrets."""
    from recsys.orchestration.local import airflow_env

    cluster = settings.orchestration.cluster
    folder = cluster_dir(settings)
    base = api_url(settings)
    env = airflow_env(settings)
    env.update(
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": cluster.metadata_url,
            "AIRFLOW__CELERY__BROKER_URL": cluster.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": result_backend(cluster.metadata_url),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(cluster.worker_concurrency),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(cluster.api_port),
            "AIRFLOW__API__BASE_URL": base,
            "AIRFLOW__API_AUTH__JWT_SECRET": _secret(folder, "jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": _secret(folder, "api_secret_key"),
            "RECSYS_ORCHESTRATION__EXECUTOR": "celery",
            # components start their own `airflow ...` subprocesses: this environment's airflow comes first
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
    )
    return env


def components(settings: Settings, env: dict[str, str]) -> list[Component]:
    """What ``up`` starts, in order: the API server first (the others report to it), then the scheduler, the DAG
    processor and the workers."""
    cluster = settings.orchestration.cluster
    found = [
        Component("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(cluster.api_port)], env),
        Component("scheduler", ["scheduler"], env),
        Component("dag-processor", ["dag-processor"], env),
    ]
    for name in worker_names(settings):
        args = ["celery", "worker", "--celery-hostname", name, "--concurrency", str(cluster.worker_concurrency)]
        # the API server reads the task logs from the shared log folder: no log server per worker (port clashes)
        found.append(Component(name, [*args, "--skip-serve-logs"], {**env, WORKER_HOSTNAME_ENV: name}))
    return found


def _pid_file(settings: Settings, name: str) -> Path:
    return cluster_dir(settings) / f"{name}.pid"


def _restarts_file(settings: Settings, name: str) -> Path:
    return cluster_dir(settings) / f"{name}.restarts"


def restarts(settings: Settings) -> dict[str, int]:
    """``{component: times its supervisor started it again}`` since ``up`` (components never restarted: absent)."""
    found = {}
    for path in sorted(cluster_dir(settings).glob("*.restarts")) if cluster_dir(settings).is_dir() else []:
        with contextlib.suppress(ValueError):
            found[path.stem] = int(path.read_text().strip())
    return found


def log_file(settings: Settings, name: str) -> Path:
    return cluster_dir(settings) / "logs" / f"{name}.log"


def _alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child that exited: reap it (no zombie)
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running(settings: Settings) -> dict[str, int]:
    """``{component: pid}`` of the pid files under the cluster folder."""
    folder = cluster_dir(settings)
    pids = {}
    for path in sorted(folder.glob("*.pid")) if folder.is_dir() else []:
        with contextlib.suppress(ValueError):
            pids[path.stem] = int(path.read_text().strip())
    return pids


def ensure_database(metadata_url: str) -> None:
    """Create the metadata database on its Postgres server when it does not exist yet (other URLs: as given)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(metadata_url)
    if not url.drivername.startswith("postgresql") or not url.database:
        return
    engine = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(text("select 1 from pg_database where datname = :d"), {"d": url.database}).scalar()
            if not exists:
                conn.execute(text(f'create database "{url.database}"'))
    finally:
        engine.dispose()


def up(settings: Settings) -> dict[str, Any]:
    """Start the cluster and wait until it works: the API server answers, the scheduler and the DAG processor
    report healthy, and every worker is ready. A component that exits meanwhile stops the rest and raises an
    error naming its log file; so does the timeout (``orchestration.cluster.start_timeout_s``)."""
    from recsys.errors import RecsysError
    from recsys.orchestration.local import prepare

    live = {name: pid for name, pid in _running(settings).items() if _alive(pid)}
    if live:
        where = cluster_dir(settings)
        raise RecsysError(f"the cluster under {where} is running ({live}): `recsys cluster down` first.")
    down(settings)  # pid files of a cluster that died
    cluster = settings.orchestration.cluster
    ensure_database(cluster.metadata_url)
    env = cluster_env(settings)
    prepare(settings, env)  # metadata schema, pools, dbt manifest
    airflow = str(Path(sys.executable).with_name("airflow"))
    started: dict[str, subprocess.Popen[bytes]] = {}
    for component in components(settings, env):
        path = log_file(settings, component.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        restarts = _restarts_file(settings, component.name)
        restarts.unlink(missing_ok=True)
        # each component under a supervisor that starts it again when it exits on its own (a metadata database
        # restart makes the scheduler exit): recsys.orchestration.supervise
        supervised = [sys.executable, "-m", "recsys.orchestration.supervise", component.name,
                      "--restarts-file", str(restarts), "--", airflow, *component.args]  # fmt: skip
        with path.open("ab") as fh:
            process = subprocess.Popen(
                supervised, env=component.env, stdout=fh, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        _pid_file(settings, component.name).write_text(f"{process.pid}\n")
        started[component.name] = process
        log.info("started %s (pid %d), log %s", component.name, process.pid, path)
    deadline = time.monotonic() + cluster.start_timeout_s
    waiting: list[str] = []
    while time.monotonic() < deadline:
        for name, process in started.items():
            if process.poll() is not None:
                down(settings)
                raise RecsysError(
                    f"cluster component {name} exited with code {process.returncode} while starting; see "
                    f"{log_file(settings, name)}."
                )
        waiting = _not_ready(settings)
        if not waiting:
            state = {"api_url": api_url(settings), "pids": {n: p.pid for n, p in started.items()}}
            (cluster_dir(settings) / "cluster.json").write_text(json.dumps(state, indent=2))
            return state
        time.sleep(2)
    down(settings)
    logs = ", ".join(str(log_file(settings, name)) for name in waiting)
    raise RecsysError(f"the cluster was not ready in {cluster.start_timeout_s:.0f} s: {waiting} not ready; see {logs}.")


def _not_ready(settings: Settings) -> list[str]:
    """The components that are not working yet (the API server's health endpoint for the scheduler and the DAG
    processor, each worker's "ready." log line)."""
    import httpx

    waiting = []
    try:
        health = httpx.get(f"{api_url(settings)}/api/v2/monitor/health", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        waiting += ["api-server", "scheduler", "dag-processor"]
    else:
        for name, key in (("scheduler", "scheduler"), ("dag-processor", "dag_processor")):
            if (health.get(key) or {}).get("status") != "healthy":
                waiting.append(name)
    for name in worker_names(settings):
        path = log_file(settings, name)
        text = path.read_text(errors="replace") if path.exists() else ""
        if f"@{name}{_READY}" not in text:
            waiting.append(name)
    return waiting


def down(settings: Settings, timeout_s: float = 60.0) -> dict[str, str]:
    """Stop every component by its pid: SIGTERM to its process group, a wait of up to ``timeout_s`` for all, then
    SIGKILL to what is left; the pid files go. Idempotent: with nothing running it does nothing."""
    pids = _running(settings)
    outcome: dict[str, str] = {}
    for name, pid in pids.items():
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            outcome[name] = "stopped"
        else:
            outcome[name] = "not running"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.5)
    for name, pid in pids.items():
        if _alive(pid):
            outcome[name] = "killed"
        # the group too: a task process or celery child that outlived its parent
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        _pid_file(settings, name).unlink(missing_ok=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids.values()):
        time.sleep(0.2)
    (cluster_dir(settings) / "cluster.json").unlink(missing_ok=True)
    return outcome


def status(settings: Settings) -> dict[str, str]:
    """``{component: "running (pid N)" | "dead (pid N)"}`` from the pid files (empty: the cluster is down)."""
    again = restarts(settings)
    return {
        name: f"{'running' if _alive(pid) else 'dead'} (pid {pid})"
        + (f", restarted {again[name]}x" if name in again else "")
        for name, pid in _running(settings).items()
    }
