"""The dbt project as an Airflow task group (astronomer-cosmos): one task per model, then that model's tests.

:func:`task_group_args` gives the ``DbtTaskGroup`` its configs from :class:`~recsys.config.Settings`:

- **rendered from the parsed manifest** (``LoadMode.DBT_MANIFEST``; ``recsys dbt parse`` writes it, see
  :mod:`recsys.transform.dbt_project`), so parsing the DAG file neither imports nor runs dbt; a missing or stale
  manifest is an import error of the DAG that says what to run;
- **the target by config**: ``warehouse.target`` picks the ``duckdb`` or ``postgres`` output of
  ``dbt/profiles.yml``;
- **dbt invoked as** :func:`recsys.transform.dbt.build` **invokes it**: at run time :func:`configure_invocation`
  sets the env (``Settings.tool_env()``, plus the connection for postgres) and the vars (``recent_items_limit``,
  the raw schema for postgres, and the run's day as ``interval_start``/``interval_end``, which the incremental
  events model reloads);
- **tests**: ``TestBehavior.AFTER_EACH`` (``<model>.run`` then ``<model>.test``, unit tests included); a test
  reading two models runs once both are built (``<test>_test``); the raw sources' tests run first
  (``<source>_source_test``), as in ``dbt build``;
- **dbtRunner in the worker's process** (no interpreter start per task), and every task in the
  ``orchestration.dbt_pool`` pool: with DuckDB one process at a time may write the warehouse file, so that pool
  needs one slot (``airflow pools set recsys_dbt 1 "dbt: one writer of the DuckDB warehouse"``).

What :func:`~recsys.transform.dbt.build` does around ``dbt build`` (the lake check, the Postgres raw sync, DuckDB's
empty-mart placeholder rows) are the DAG's tasks before and after the group (``recsys.pipeline``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recsys.transform.dbt_project import PROFILE, current_manifest, dbt_project_dir

if TYPE_CHECKING:
    from airflow.sdk import DAG, BaseOperator, TaskGroup
    from cosmos.constants import ExecutionMode, TestIndirectSelection
    from cosmos.dbt.graph import DbtNode
    from cosmos.operators.base import AbstractDbtBase

    from recsys.config import Settings

GROUP_ID = "dbt"


def task_group_args(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``cosmos.DbtTaskGroup`` for the project's dbt models, configured from ``settings``.

    Raises :class:`~recsys.errors.TransformError` (what to run) when the parsed manifest is missing or stale.
    """
    from cosmos import ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
    from cosmos.constants import DbtResourceType, ExecutionMode, InvocationMode, LoadMode, TestBehavior

    project = dbt_project_dir()
    return {
        "project_config": ProjectConfig(
            dbt_project_path=project, manifest_path=current_manifest(settings), install_dbt_deps=False
        ),
        "profile_config": ProfileConfig(
            profile_name=PROFILE, target_name=settings.warehouse.target, profiles_yml_filepath=project / "profiles.yml"
        ),
        "render_config": RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.AFTER_EACH,
            should_detach_multiple_parents_tests=True,
            node_converters={DbtResourceType.SOURCE: source_tests},
            emit_datasets=False,  # the DAG's asset is the day's features, not each dbt relation
        ),
        "execution_config": ExecutionConfig(
            execution_mode=ExecutionMode.LOCAL, invocation_mode=InvocationMode.DBT_RUNNER
        ),
        "operator_args": {
            "interceptors": [configure_invocation],
            "pool": settings.orchestration.dbt_pool,
            "retries": 0,  # a failed dbt test is a data fault: retrying it in two minutes finds the same data
            "no_version_check": True,
            "dbt_cmd_flags": ["--no-write-json"],  # not the 800 kB manifest.json (and run_results.json) per task
        },
    }


def configure_invocation(context: dict[str, Any], operator: AbstractDbtBase) -> None:
    """A cosmos interceptor: at run time, the dbt env and vars of the task's run (its UTC day) from the settings.

    It also freezes the objects alive before dbt runs (``gc.freeze``): cosmos ends every in-process dbt call with
    a full ``gc.collect()`` (to release dbt's adapters), which otherwise walks every object of Airflow and dbt
    again (0.3 to 0.7 s a task here; the 27 tasks of a day took 53 s without the freeze, 19 s with it). Frozen
    objects are only skipped by the collector; what dbt creates during its call is still collected.
    """
    import gc

    from recsys.config import get_settings
    from recsys.orchestration.context import interval
    from recsys.transform.dbt import invocation_env, invocation_vars

    gc.freeze()
    settings = get_settings()
    target = settings.warehouse.target
    operator.env = {**(operator.env or {}), **invocation_env(settings, target)}
    operator.vars = invocation_vars(settings, target, interval=interval(context, "day"))


def source_tests(
    dag: DAG,
    task_group: TaskGroup | None,
    node: DbtNode,
    task_args: dict[str, Any],
    execution_mode: ExecutionMode,
    test_indirect_selection: TestIndirectSelection,
    **_: object,
) -> BaseOperator | None:
    """A cosmos node converter: a raw source becomes the task running its data tests (``dbt test -s source:...``).

    cosmos would otherwise drop them, or run ``dbt source freshness`` against the wall clock, which fails every
    day of a backfill; freshness is the features DAG's own check.
    """
    from cosmos.airflow.graph import create_airflow_task, create_test_task_metadata

    if not node.has_test:
        return None
    meta = create_test_task_metadata(
        f"{node.name}_source_test", execution_mode, test_indirect_selection, task_args=task_args, node=node
    )
    return create_airflow_task(meta, dag, task_group)
