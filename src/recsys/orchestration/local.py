"""Run the project's Airflow DAGs locally (``airflow dags test`` on SQLite metadata, the embedded mode)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
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


def run_dag_test(
    settings: Settings,
    dag_id: str,
    conf: dict[str, str],
    log_file: Path | None = None,
    logical_date: datetime | None = None,
) -> None:
    """Run every task of one run of ``dag_id`` with ``airflow dags test`` (one process, no scheduler).

    ``conf`` names the partition (``{"day": "YYYY-MM-DD"}`` or ``{"week": "YYYY-MM-DD"}``). A failed run raises
    a RecsysError naming the tasks that failed, with the exception each failed with, and the ones that did not
    run because of them. The run's logical date is now unless given; Airflow creates only the tasks whose
    start..end dates hold it, and a run that created none raises too (it would otherwise "succeed" empty).
    """
    env = airflow_env(settings)
    # One-shot runs do not retry: `dags test` would sit out the DAG's retry delay (minutes) before failing the
    # same way again. RECSYS_ORCHESTRATION__RETRIES set by the caller wins.
    env.setdefault("RECSYS_ORCHESTRATION__RETRIES", "0")
    prepare(settings, env)
    when = [logical_date.isoformat()] if logical_date else []
    if _airflow(["dags", "test", dag_id, *when, "-c", json.dumps(conf)], env, log_file) == 0:
        if task_states(settings, dag_id):
            return
        raise DagRunFailed(
            f"{dag_id} {conf}: Airflow created no task for the run: its logical date "
            f"({logical_date or 'now'}) lies outside the DAG's start and end dates (orchestration.start_date "
            f"{settings.orchestration.start_date}, end_date {settings.orchestration.end_date}). Run a partition "
            "inside them, or widen them (RECSYS_ORCHESTRATION__START_DATE / __END_DATE).",
            failed=[],
            not_run=[],
        )
    states = task_states(settings, dag_id)
    failed = sorted(t for t, s in states.items() if s == "failed")
    blocked = sorted(t for t, s in states.items() if s in {"upstream_failed", None})
    reasons = failure_reasons(log_file.read_text(errors="replace")) if log_file and log_file.is_file() else {}
    said = "".join(f"\n  {task}: {reason}" for task, reason in reasons.items())
    where = f"; see {log_file}" if log_file else ""
    raise DagRunFailed(
        f"{dag_id} {conf} failed at {', '.join(failed) or 'an unknown task'} (not run: {', '.join(blocked) or '-'})"
        f"{where}. Fix what the failed task reports, then run the same {next(iter(conf), 'run')} again.{said}",
        failed=failed,
        not_run=blocked,
    )


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")  # a structlog line; traceback lines are not
_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\S+)")


def failure_reasons(log: str, max_lines: int = 12) -> dict[str, str]:
    """``{task_id: the exception it failed with}`` from an ``airflow dags test`` log: the exception of each
    "Task failed with exception" traceback (of a chain, the last; at most ``max_lines`` of its message), under
    the task that was running (the last attempt's, if it retried)."""
    reasons: dict[str, str] = {}
    task = "?"
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if started := _TASK_START.search(line):
            task = started.group(1)
        elif "Task failed with exception" in line:
            block: list[str] = []
            for following in lines[i + 1 :]:
                if _LOG_LINE.match(following):
                    break
                block.append(following)
            tracebacks = [n for n, b in enumerate(block) if b.startswith("Traceback")]
            after = block[tracebacks[-1] + 1 :] if tracebacks else block
            first = next((n for n, b in enumerate(after) if b.strip() and not b[0].isspace()), None)
            if first is not None:
                message = [b for b in after[first:] if b.strip()]
                clipped = message[:max_lines] + (["..."] if len(message) > max_lines else [])
                reasons[task] = "\n    ".join(clipped)
    return reasons


def run_features_day(settings: Settings, day: date, log_file: Path | None = None) -> None:
    """``recsys_features`` for one UTC day.

    With an ``orchestration.end_date`` the DAG's tasks end at its last partition's run, so the run takes the
    day's own run time (the day after it, 00:00 UTC) as its logical date rather than now, which lies past it.
    """
    end = settings.orchestration.end_date
    logical = datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=UTC) if end else None
    run_dag_test(settings, FEATURES_DAG, {"day": day.isoformat()}, log_file, logical)


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


def stop_group(process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Stop ``process`` and everything it started (its session's process group): SIGTERM, a wait of up to
    ``timeout_s``, then SIGKILL to the group, since standalone's scheduler and its LocalExecutor workers can
    outlive it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.monotonic() + 15  # killed orphans are reaped by init a moment later
    while time.monotonic() < deadline and _group_alive(process.pid):
        time.sleep(0.2)


def _group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (zombies do not count; Linux /proc)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def standalone(settings: Settings, port: int = 8080) -> subprocess.Popen[bytes]:
    """Start ``airflow standalone`` (scheduler, DAG processor, triggerer, API server and UI) on the embedded home.

    Both DAGs appear in the UI with the runs ``recsys run`` / ``recsys train`` / the demo made there (they share
    the metadata database); new DAGs start paused. The admin password is in
    ``{home}/airflow/simple_auth_manager_passwords.json.generated``. The caller stops the returned process
    group (:func:`stop_group`).
    """
    env = standalone_env(settings, port)
    prepare(settings, env)
    cmd = [str(Path(sys.executable).with_name("airflow")), "standalone"]
    log.info("starting %s on http://127.0.0.1:%d", " ".join(cmd), port)
    return subprocess.Popen(cmd, env=env, start_new_session=True)
