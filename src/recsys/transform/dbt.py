"""Run ``dbt build`` on the project's ``dbt/`` folder in this process, configured from :class:`Settings`.

dbt reads paths and connections from env vars (see ``dbt/profiles.yml``); they are set from
``Settings.tool_env()`` for the duration of the call only. dbt's target and log folders live under
``{home}/dbt`` so a build never writes into the repository.

The pieces of a build are public so the Airflow task group (``recsys.orchestration.dbt``, one task per model)
runs dbt the same way: :func:`invocation_env` and :func:`invocation_vars` (what dbt is invoked with),
:func:`prepare` (before dbt) and :func:`drop_placeholder_rows` (after it); :func:`parse_manifest` (or
:func:`ensure_manifest`) writes the manifest the task group is rendered from.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from recsys import lake
from recsys.config import PostgresSettings, Settings
from recsys.errors import IntervalError, TransformError
from recsys.transform.dbt_project import (
    FINGERPRINT,
    MANIFEST,
    dbt_project_dir,
    manifest_dir,
    manifest_problem,
    project_fingerprint,
)

FAILED_STATUSES = frozenset({"error", "fail", "runtime error"})
TARGET_ENV = "RECSYS_DBT_TARGET"
Target = Literal["duckdb", "postgres", "spark"]


@dataclass(frozen=True)
class NodeResult:
    """Outcome of one dbt node (model, test, unit test) in a build."""

    unique_id: str
    name: str
    resource_type: str
    status: str
    seconds: float
    message: str | None
    failures: int | None
    compiled_path: str | None = None

    @property
    def failed(self) -> bool:
        """True for errors and failing tests (not for skipped nodes or warnings)."""
        return self.status in FAILED_STATUSES


@dataclass(frozen=True)
class DbtBuildResult:
    """All node outcomes of one ``dbt build`` and its wall time."""

    success: bool
    nodes: tuple[NodeResult, ...]
    seconds: float

    @property
    def failed(self) -> tuple[NodeResult, ...]:
        """The nodes that errored or whose test failed."""
        return tuple(n for n in self.nodes if n.failed)

    def statuses(self) -> dict[str, str]:
        """``{node name: status}``, handy for logs and assertions."""
        return {n.name: n.status for n in self.nodes}

    def summary(self) -> dict[str, Any]:
        """A small JSON-able summary (an Airflow XCom): success, seconds, node counts by type and status."""
        counts: dict[str, int] = {}
        for n in self.nodes:
            key = f"{n.resource_type}:{n.status}"
            counts[key] = counts.get(key, 0) + 1
        return {"success": self.success, "seconds": round(self.seconds, 3), "nodes": counts}


def build(
    settings: Settings,
    select: str | None = None,
    full_refresh: bool = False,
    *,
    target: Target | None = None,
    postgres: PostgresSettings | None = None,
    interval: tuple[datetime, datetime] | None = None,
) -> DbtBuildResult:
    """Run ``dbt build`` (models, their tests and unit tests) and return every node's outcome.

    ``select`` is a dbt selection (e.g. ``"+user_daily_features"``, space-separated for several); tests
    run when all the models they read are selected or upstream of the selection. ``target`` is ``duckdb``
    (default; marts exported as Parquet under ``settings.marts``) or ``postgres`` (``postgres`` says where,
    default the ``warehouse.postgres`` settings section; load the raw tables first with
    :func:`recsys.transform.postgres.sync_raw` or :func:`~recsys.transform.postgres.load_raw`).
    ``interval`` (the data interval) makes the incremental events model reload the raw partitions of that
    interval; without it, the newest and any not yet loaded partitions are reloaded.
    Raises :class:`TransformError` naming each failed node and its message, or when the raw lake lacks
    a table or dbt cannot start.
    """
    target = target or _target_from_env()
    prepare(settings, target)
    env = invocation_env(settings, target, postgres)
    dbt_vars = invocation_vars(settings, target, postgres, interval)
    args = _build_args(settings, select, full_refresh, target, dbt_vars)
    start = time.perf_counter()
    with _temporary_env(env):
        outcome = _invoke(args)
    result = _to_result(outcome, time.perf_counter() - start)
    if target == "duckdb":
        built = [n.name for n in result.nodes if n.resource_type == "model" and n.status == "success"]
        drop_placeholder_rows(settings.marts, built)
    if not result.success:
        raise TransformError(_failure_summary(result))
    return result


def invocation_env(settings: Settings, target: Target, postgres: PostgresSettings | None = None) -> dict[str, str]:
    """Env vars ``dbt/profiles.yml`` and the sources read: the settings' paths, and the connection for postgres or
    spark."""
    env = dict(settings.tool_env())
    if target == "postgres":
        env.update((postgres or settings.warehouse.postgres).dbt_env())
    elif target == "spark":
        env.update(settings.warehouse.spark.dbt_env())
    return env


def invocation_vars(
    settings: Settings,
    target: Target,
    postgres: PostgresSettings | None = None,
    interval: tuple[datetime, datetime] | None = None,
) -> dict[str, str]:
    """dbt ``--vars``: ``recent_items_limit``, the raw schema for postgres, the data interval when given."""
    dbt_vars = {"recent_items_limit": str(settings.recent_items_limit)}
    if target == "postgres":
        dbt_vars["raw_schema"] = (postgres or settings.warehouse.postgres).raw_schema
    elif target == "spark":
        dbt_vars["raw_schema"] = settings.warehouse.spark.raw_schema
    if interval is not None:
        dbt_vars.update(_interval_vars(*interval))
    return dbt_vars


def prepare(settings: Settings, target: Target) -> None:
    """Before dbt runs on DuckDB: the raw lake has every table, and the warehouse and marts folders exist.

    (PostgreSQL needs its raw tables synced instead: :func:`recsys.transform.postgres.sync_raw`.)
    """
    if target == "duckdb":
        _check_raw_lake(settings.lake)
        _prepare_local_outputs(settings)


def parse_manifest(settings: Settings) -> Path:
    """``dbt parse`` the project into ``{home}/dbt/manifest/manifest.json``, stamped with the project's fingerprint.

    The manifest is what the Airflow task group is rendered from, without running dbt when the DAG file is parsed
    (see :func:`recsys.transform.dbt_project.current_manifest`). The graph is the same for both targets, so it is
    parsed for DuckDB (no server needed). The new manifest replaces the old one only once complete.
    """
    folder = manifest_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    fingerprint = project_fingerprint()
    work = Path(tempfile.mkdtemp(prefix="parse-", dir=folder))  # dbt's target and logs, kept if the parse fails
    with _temporary_env(invocation_env(settings, "duckdb")):
        outcome = _invoke([*_project_args("parse", "duckdb", work), "--no-partial-parse", "--quiet"])
    if not outcome.success:
        raise TransformError(f"dbt parse failed on {dbt_project_dir()}: see the logs under {work / 'logs'}.")
    os.replace(work / "target" / MANIFEST, folder / MANIFEST)
    (folder / FINGERPRINT).write_text(fingerprint + "\n")
    shutil.rmtree(work)
    return folder / MANIFEST


def ensure_manifest(settings: Settings) -> Path:
    """The parsed manifest, parsed first (:func:`parse_manifest`) when missing or stale; cheap when current."""
    if manifest_problem(settings) is None:
        return manifest_dir(settings) / MANIFEST
    return parse_manifest(settings)


def _target_from_env() -> Target:
    value = os.environ.get(TARGET_ENV, "duckdb")
    if value not in ("duckdb", "postgres", "spark"):
        raise TransformError(
            f"{TARGET_ENV}={value!r} is not a dbt target of dbt/profiles.yml: use duckdb, postgres or spark."
        )
    return value  # type: ignore[return-value]


def _interval_vars(start: datetime, end: datetime) -> dict[str, str]:
    """dbt vars of the data interval, as UTC ISO strings (naive datetimes are taken as UTC)."""
    try:
        start, end = lake.check_interval(start, end)
    except IntervalError as exc:
        raise TransformError(str(exc)) from exc
    return {"interval_start": start.isoformat(), "interval_end": end.isoformat()}


def _check_raw_lake(lake_dir: Path) -> None:
    missing = [t for t in lake.RAW_TABLES if not lake.partitions(lake_dir, t)]
    if missing:
        raise TransformError(
            f"The raw lake {lake_dir / 'raw'} has no partition for {', '.join(missing)}: dbt reads "
            f"raw/<table>/dt=YYYY-MM-DD/{lake.PARTITION_FILE}. Run the extract stage for at least one interval first."
        )


def _prepare_local_outputs(settings: Settings) -> None:
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    settings.marts.mkdir(parents=True, exist_ok=True)


def drop_placeholder_rows(marts: Path, models: Iterable[str]) -> list[str]:
    """dbt-duckdb writes an empty model as one all-NULL row (to keep the types); make it a zero-row file.

    Feast and the trainer read the Parquet files directly and would otherwise see a row with null ids. ``models``
    are the models just built (those without a file under ``marts`` are not exports); returns those fixed.
    """
    import pyarrow.parquet as pq

    fixed = []
    for name in models:
        path = marts / f"{name}.parquet"
        if not path.is_file() or pq.ParquetFile(path).metadata.num_rows != 1:
            continue
        table = pq.read_table(path)
        if all(column.null_count == 1 for column in table.columns):
            pq.write_table(table.slice(0, 0), path)
            fixed.append(name)
    return fixed


def _build_args(
    settings: Settings, select: str | None, full_refresh: bool, target: Target, dbt_vars: Mapping[str, str]
) -> list[str]:
    args = _project_args("build", target, settings.home / "dbt" / target)
    if select:
        # only tests whose parents are all built (or upstream of the selection): no test on a stale model
        args += ["--select", *select.split(), "--indirect-selection", "buildable"]
    if full_refresh:
        args.append("--full-refresh")
    if dbt_vars:
        args += ["--vars", json.dumps(dict(dbt_vars))]
    return args


def _project_args(command: str, target: Target, work: Path) -> list[str]:
    """``dbt <command>`` on the repository's project, its target and log folders under ``work``."""
    project = dbt_project_dir()
    if not (project / "dbt_project.yml").is_file():
        raise TransformError(f"No dbt project at {project}: set RECSYS_PROJECT_DIR to the repository root.")
    return [
        command,
        "--target", target,
        "--project-dir", str(project),
        "--profiles-dir", str(project),
        "--target-path", str(work / "target"),
        "--log-path", str(work / "logs"),
        "--no-send-anonymous-usage-stats",
        "--no-version-check",
        "--no-use-colors",
    ]  # fmt: skip


@contextmanager
def _temporary_env(values: Mapping[str, str]) -> Iterator[None]:
    """Set env vars for the block, then restore the previous values (or absence)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _invoke(args: list[str]) -> Any:
    from dbt.cli.main import dbtRunner

    try:
        outcome = dbtRunner().invoke(args)
    finally:
        release_duckdb()
    if outcome.exception is not None:
        raise TransformError(
            f"dbt could not run ({type(outcome.exception).__name__}: {outcome.exception}); "
            f"check dbt/ and the logs under the --log-path given: {' '.join(args)}"
        ) from outcome.exception
    return outcome


def release_duckdb() -> None:
    """Close the DuckDB database dbt-duckdb keeps open for the life of the process after an in-process run.

    Otherwise this process holds the warehouse file's lock, and any other process (an Airflow task, the dbt
    CLI, a second build in a subprocess) fails with "Could not set lock on file".
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        environment, DuckDBConnectionManager._ENV = DuckDBConnectionManager._ENV, None
    if environment is not None:
        environment.close()


def _to_result(outcome: Any, seconds: float) -> DbtBuildResult:
    run_results = getattr(outcome.result, "results", None) or []
    nodes = tuple(_node_result(r) for r in run_results)
    success = bool(outcome.success) and not any(n.failed for n in nodes)
    return DbtBuildResult(success=success, nodes=nodes, seconds=seconds)


def _node_result(run_result: Any) -> NodeResult:
    node = run_result.node
    status = run_result.status
    return NodeResult(
        unique_id=node.unique_id,
        name=node.name,
        resource_type=str(getattr(node.resource_type, "value", node.resource_type)),
        status=str(getattr(status, "value", status)),
        seconds=float(run_result.execution_time or 0.0),
        message=run_result.message,
        failures=run_result.failures,
        compiled_path=getattr(node, "compiled_path", None),
    )


def _describe_failure(node: NodeResult) -> str:
    line = f"- {node.resource_type} {node.name}: {node.status}: {(node.message or '').strip()}"
    if node.resource_type == "test" and node.status == "fail" and node.compiled_path:
        line += f" (the query {node.compiled_path} returns the offending rows)"
    return line


def _failure_summary(result: DbtBuildResult) -> str:
    failed = result.failed
    skipped = sum(1 for n in result.nodes if n.status == "skipped")
    lines = [f"dbt build failed: {len(failed)} node(s) failed, {skipped} skipped."]
    lines += [_describe_failure(n) for n in failed]
    lines.append("Fix the data or the model named above, then re-run the build (it is idempotent).")
    return "\n".join(lines)
