"""Run the project's Airflow DAGs locally (``airflow dags test`` on SQLite metadata, the embedded mode)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.config import project_dir
from recsys.errors import DagRunFailed, RecsysError

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger(__name__)
FEATURES_DAG = "recsys_features"
TRAINING_DAG = "recsys_training"


def airflow_env(settings: Settings) -> dict[str, str]:
    """Environment for an ``airflow`` subprocess: its home under ``settings.home``, our dags folder, no examples.

    ``AIRFLOW__*`` variables already set by the caller (for example a Postgres metadata
    ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``) win over these defaults.
    """
    home = settings.home / "airflow"
    defaults = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project_dir() / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",  # no call out to a telemetry host from every dbt task
        "AIRFLOW__COSMOS__CACHE_DIR": str(home / "cosmos"),
    }
    env = {**os.environ, "AIRFLOW_HOME": defaults.pop("AIRFLOW_HOME")}  # this runner owns its Airflow home
    for key, value in defaults.items():
        env.setdefault(key, value)
    env.update({k: v for k, v in settings.tool_env().items() if k not in os.environ})
    env["RECSYS_HOME"] = str(settings.home)
    return env


def _airflow(args: list[str], env: dict[str, str], log_file: Path | None = None) -> int:
    cmd = [str(Path(sys.executable).with_name("airflow")), *args]
    log.info("running %s", " ".join(cmd))
    if log_file is None:
        return subprocess.run(cmd, env=env, check=False).returncode
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as fh:
        return subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode


def migrate(settings: Settings, env: dict[str, str] | None = None) -> None:
    """Create or upgrade the Airflow metadata database (once per home and Airflow version)."""
    from importlib.metadata import version

    env = env or airflow_env(settings)
    home = Path(env["AIRFLOW_HOME"])
    marker = home / f".migrated-{version('apache-airflow')}"
    if marker.exists() and "sqlite" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]:
        return
    home.mkdir(parents=True, exist_ok=True)
    log_file = home / "logs" / "db-migrate.log"
    if _airflow(["db", "migrate"], env, log_file) != 0:
        raise RecsysError(f"`airflow db migrate` failed; see {log_file}.")
    pool = settings.orchestration.dbt_pool
    pools_log = home / "logs" / "pools-set.log"
    if _airflow(["pools", "set", pool, "1", "dbt: one writer of the DuckDB warehouse"], env, pools_log) != 0:
        raise RecsysError(f"`airflow pools set {pool} 1` failed; see {pools_log}.")
    marker.touch()


def prepare(settings: Settings, env: dict[str, str] | None = None) -> None:
    """What Airflow needs before it parses the DAGs: the metadata database and pools, and the parsed dbt
    manifest the features DAG's dbt task group is rendered from (parsed again only when dbt/ changed)."""
    from recsys.transform.dbt import ensure_manifest

    migrate(settings, env)
    ensure_manifest(settings)


def run_dag_test(settings: Settings, dag_id: str, conf: dict[str, str], log_file: Path | None = None) -> None:
    """Run every task of one run of ``dag_id`` with ``airflow dags test`` (one process, no scheduler).

    ``conf`` names the partition (``{"day": "YYYY-MM-DD"}`` or ``{"week": "YYYY-MM-DD"}``). A failed run raises
    a RecsysError naming the tasks that failed and the ones that did not run because of them.
    """
    env = airflow_env(settings)
    prepare(settings, env)
    if _airflow(["dags", "test", dag_id, "-c", json.dumps(conf)], env, log_file) == 0:
        return
    states = task_states(settings, dag_id)
    failed = sorted(t for t, s in states.items() if s == "failed")
    blocked = sorted(t for t, s in states.items() if s in {"upstream_failed", None})
    where = f"; see {log_file}" if log_file else ""
    raise DagRunFailed(
        f"{dag_id} {conf} failed at {', '.join(failed) or 'an unknown task'} (not run: {', '.join(blocked) or '-'})"
        f"{where}. Fix what the failed task reports, then run the same {next(iter(conf), 'run')} again.",
        failed=failed,
        not_run=blocked,
    )


def run_features_day(settings: Settings, day: date, log_file: Path | None = None) -> None:
    """``recsys_features`` for one UTC day."""
    run_dag_test(settings, FEATURES_DAG, {"day": day.isoformat()}, log_file)


def run_training_week(settings: Settings, monday: date, log_file: Path | None = None) -> None:
    """``recsys_training`` for the ISO week starting on ``monday``."""
    run_dag_test(settings, TRAINING_DAG, {"week": monday.isoformat()}, log_file)


def last_complete_week(first: date, last: date) -> date | None:
    """The Monday of the last ISO week (Monday to Sunday) that lies wholly in ``[first, last]``, or None."""
    sunday = last - timedelta(days=(last.weekday() + 1) % 7)
    monday = sunday - timedelta(days=6)
    return monday if monday >= first else None


def task_states(settings: Settings, dag_id: str) -> dict[str, str | None]:
    """``{task_id: state}`` of the newest run of ``dag_id`` in the metadata database (read-only)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(airflow_env(settings)["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    try:
        with engine.connect() as conn:
            run_id = conn.execute(
                text("select run_id from dag_run where dag_id = :d order by id desc limit 1"), {"d": dag_id}
            ).scalar()
            rows = conn.execute(
                text("select task_id, state from task_instance where dag_id = :d and run_id = :r"),
                {"d": dag_id, "r": run_id},
            )
            return {task: state for task, state in rows}
    finally:
        engine.dispose()


def standalone_env(settings: Settings, port: int) -> dict[str, str]:
    """``airflow standalone``'s environment: the embedded home and metadata, the API/UI on 127.0.0.1:``port``."""
    env = airflow_env(settings)
    env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")
    env["AIRFLOW__API__PORT"] = str(port)
    env.setdefault("AIRFLOW__API__BASE_URL", f"http://127.0.0.1:{port}")
    # standalone starts its components as `airflow ...` subprocesses: this environment's airflow comes first
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def standalone(settings: Settings, port: int = 8080) -> subprocess.Popen[bytes]:
    """Start ``airflow standalone`` (scheduler, DAG processor, triggerer, API server and UI) on the embedded home.

    Both DAGs appear in the UI with the runs ``recsys run`` / ``recsys train`` / the demo made there (they share
    the metadata database); new DAGs start paused. The admin password is in
    ``{home}/airflow/simple_auth_manager_passwords.json.generated``. The caller stops the returned process
    group (``os.killpg``).
    """
    env = standalone_env(settings, port)
    prepare(settings, env)
    cmd = [str(Path(sys.executable).with_name("airflow")), "standalone"]
    log.info("starting %s on http://127.0.0.1:%d", " ".join(cmd), port)
    return subprocess.Popen(cmd, env=env, start_new_session=True)
