"""Run the project's Airflow DAGs locally (``airflow dags test`` on SQLite metadata, the embedded mode)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from recsys.config import project_dir
from recsys.errors import RecsysError

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger(__name__)
DAG_ID = "recsys_daily"


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
    }
    env = {**os.environ, "AIRFLOW_HOME": defaults.pop("AIRFLOW_HOME")}  # this runner owns its Airflow home
    for key, value in defaults.items():
        env.setdefault(key, value)
    env.update({k: v for k, v in settings.tool_env().items() if k not in os.environ})
    env["RECSYS_HOME"] = str(settings.home)
    return env


def _airflow(args: list[str], env: dict[str, str], log_file: Path | None = None) -> None:
    cmd = [str(Path(sys.executable).with_name("airflow")), *args]
    log.info("running %s", " ".join(cmd))
    if log_file is None:
        proc = subprocess.run(cmd, env=env, check=False)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("w") as fh:
            proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        where = f"; see {log_file}" if log_file else ""
        raise RecsysError(f"`airflow {' '.join(args)}` failed with exit code {proc.returncode}{where}.")


def run_dag_test(settings: Settings, day: date, dag_id: str = DAG_ID, log_file: Path | None = None) -> None:
    """Run every task of the DAG run whose data interval is ``[day, day + 1)``, in-process.

    Airflow 3 gives a manual run the last complete interval before its run date, so the run date passed to
    ``airflow dags test`` is the day after ``day``. Migrates the metadata DB first (a no-op when current).
    """
    env = airflow_env(settings)
    Path(env["AIRFLOW_HOME"]).mkdir(parents=True, exist_ok=True)
    _airflow(["db", "migrate"], env, log_file.with_suffix(".migrate.log") if log_file else None)
    _airflow(["dags", "test", dag_id, (day + timedelta(days=1)).isoformat()], env, log_file)
