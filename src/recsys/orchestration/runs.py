"""The DAGs' runs as Airflow recorded them: its metadata database's ``dag_run`` table, read-only.

The database is the one the embedded mode uses (``local.airflow_env``: ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONN``,
by default ``{home}/airflow/airflow.db``; a caller's own setting wins). SQLite is opened read-only; a database
that does not exist yet, or has no ``dag_run`` table, means no runs yet. Only SQLAlchemy is imported, not Airflow.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from recsys import lake
from recsys.config import Settings
from recsys.errors import RecsysError

DAG_IDS = ("recsys_features", "recsys_training")
CONN_VAR = "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"


@dataclass(frozen=True)
class DagRunInfo:
    """One run of a DAG: its id, outcome (Airflow's state) and times (ISO, UTC)."""

    dag_id: str
    run_id: str
    state: str | None  # queued, running, success, failed
    run_type: str
    partition_key: str | None
    data_interval_start: str | None
    data_interval_end: str | None
    start_date: str | None
    end_date: str | None

    def summary(self) -> dict[str, Any]:
        """JSON-able fields."""
        return asdict(self)


def metadata_url(settings: Settings) -> str:
    """The SQLAlchemy URL of the Airflow metadata database the embedded mode uses."""
    from recsys.orchestration.local import airflow_env

    return airflow_env(settings)[CONN_VAR]


def _engine(url: str) -> Any | None:
    """A read-only engine on ``url``, or None when it is a SQLite file that does not exist."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed)
    path = Path(parsed.database or "")
    if not parsed.database or parsed.database == ":memory:" or not path.is_file():
        return None
    return create_engine(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true")


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return lake.utc(value if isinstance(value, datetime) else datetime.fromisoformat(str(value))).isoformat()


def last_runs(settings: Settings, dag_ids: tuple[str, ...] = DAG_IDS) -> dict[str, DagRunInfo | None]:
    """The newest run (the last one Airflow created) of each DAG; None for a DAG with no runs yet.

    RecsysError when the database exists but cannot be read.
    """
    from sqlalchemy import DateTime, String, column, inspect, select, table
    from sqlalchemy.exc import SQLAlchemyError

    url = metadata_url(settings)
    engine = _engine(url)
    if engine is None:
        return dict.fromkeys(dag_ids)
    dag_run = table(
        "dag_run",
        *(column(name, String) for name in ("dag_id", "run_id", "state", "run_type", "partition_key")),
        *(column(name, DateTime) for name in ("data_interval_start", "data_interval_end", "start_date", "end_date")),
        column("id"),
    )
    runs: dict[str, DagRunInfo | None] = {}
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("dag_run"):
                return dict.fromkeys(dag_ids)
            for dag_id in dag_ids:
                query = select(dag_run).where(dag_run.c.dag_id == dag_id).order_by(dag_run.c.id.desc()).limit(1)
                row = conn.execute(query).mappings().first()
                runs[dag_id] = None if row is None else _info(row)
            conn.rollback()  # read only: nothing to keep
    except SQLAlchemyError as exc:
        raise RecsysError(f"cannot read the Airflow runs from {engine.url!r} ({CONN_VAR}): {exc}") from exc
    finally:
        engine.dispose()
    return runs


def _info(row: Any) -> DagRunInfo:
    return DagRunInfo(
        dag_id=row["dag_id"],
        run_id=row["run_id"],
        state=row["state"],
        run_type=row["run_type"],
        partition_key=row["partition_key"],
        data_interval_start=_iso(row["data_interval_start"]),
        data_interval_end=_iso(row["data_interval_end"]),
        start_date=_iso(row["start_date"]),
        end_date=_iso(row["end_date"]),
    )
