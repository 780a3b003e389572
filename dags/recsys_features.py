"""
### recsys_features

One UTC day of features, partitioned by day (partition key ``YYYY-MM-DD``): the scheduler runs one partition
per day and catches up from ``orchestration.start_date`` (``RECSYS_ORCHESTRATION__START_DATE``), so history
is backfilled by the scheduler (``airflow backfill create --dag-id recsys_features --from-date ... --to-date
...``) and every partition passes the same gates. A run for one day by hand: conf ``{"day": "YYYY-MM-DD"}``.

extract (sources → raw Parquet) → GX gates on the raw items and events (a failing partition is quarantined;
too many rows quarantined at extraction fails too) → dbt: the lake checked (Postgres: raw tables synced), then
the ``dbt`` task group (astronomer-cosmos: each model's run then its tests), then DuckDB's empty marts fixed →
GX gates on the marts' rows of the day → encode new or changed item texts with BERT → materialize the day into
the online store (order-safe: an older day never overwrites newer values) → freshness of every feature view
against its SLA → the ``recsys_features`` asset event for the day, which ``recsys_training`` rolls up into weeks.

The dbt task group is rendered from the parsed dbt manifest (run ``recsys dbt parse`` after changing ``dbt/``);
its tasks share the pool ``orchestration.dbt_pool``, which needs one slot with DuckDB (one writer at a time):
``airflow pools set recsys_dbt 1 "dbt: one writer of the DuckDB warehouse"``.

Each task is a thin wrapper over a ``recsys.pipeline`` stage: the same function the CLI and the tests call; with
``orchestration.executor: kubernetes`` the tasks of ``orchestration.kubernetes.pod_tasks`` run that stage as
``recsys stage <task> <day>`` in a pod of the recsys image (docs/scale-out.md). Configuration comes from
``RECSYS_*`` environment variables (or the YAML file named by ``RECSYS_CONFIG``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from airflow.sdk import CronPartitionTimetable, Param, chain, dag, task
from cosmos import DbtTaskGroup

from recsys.config import get_settings
from recsys.orchestration.assets import FEATURES
from recsys.orchestration.dbt import GROUP_ID as DBT_GROUP_ID
from recsys.orchestration.dbt import task_group_args as dbt_task_group_args
from recsys.orchestration.kubernetes import task_or_pod, user_defined_macros

SETTINGS = get_settings()  # settings only: no connection, no heavy import at parse time
ORCHESTRATION = SETTINGS.orchestration


def _run_of(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC) + timedelta(days=1)


def _day(context: dict) -> tuple[datetime, datetime]:
    from recsys.orchestration.context import interval

    return interval(context, "day")


@dag(
    dag_id="recsys_features",
    schedule=CronPartitionTimetable("0 0 * * *", timezone="UTC", run_offset=-1, key_format="%Y-%m-%d"),
    # a partition's run comes one day after it (run_offset=-1): the day must be over before it is extracted
    start_date=_run_of(ORCHESTRATION.start_date),
    end_date=_run_of(ORCHESTRATION.end_date) if ORCHESTRATION.end_date else None,
    catchup=True,
    max_active_runs=1,
    tags=["recsys", "features"],
    default_args={
        "retries": 2 if ORCHESTRATION.retries is None else ORCHESTRATION.retries,
        "retry_delay": timedelta(minutes=2),
    },
    params={"day": Param(None, type=["null", "string"], description="UTC day YYYY-MM-DD (manual runs only).")},
    user_defined_macros=user_defined_macros(),
    doc_md=__doc__,
)
def recsys_features() -> None:
    @task
    def extract(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import extract_stage

        return extract_stage(get_settings(), *_day(context))

    @task(retries=0)
    def validate_raw(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import validate_raw_stage

        return validate_raw_stage(get_settings(), *_day(context))

    @task
    def dbt_prepare(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import dbt_prepare_stage

        return dbt_prepare_stage(get_settings(), *_day(context))

    @task
    def dbt_finish(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import dbt_finish_stage

        return dbt_finish_stage(get_settings(), *_day(context))

    @task(pool=ORCHESTRATION.dbt_pool, retries=0)
    def dbt_build(**context) -> dict:  # noqa: ANN003
        """The whole project in one `dbt build` (orchestration.dbt_tasks: single)."""
        from recsys.pipeline import transform_stage

        return transform_stage(get_settings(), *_day(context))

    if ORCHESTRATION.dbt_tasks == "per_model":
        dbt = [dbt_prepare(), DbtTaskGroup(group_id=DBT_GROUP_ID, **dbt_task_group_args(SETTINGS)), dbt_finish()]
    else:
        dbt = [task_or_pod(SETTINGS, dbt_build)]

    @task(retries=0)
    def validate_marts(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import validate_marts_stage

        return validate_marts_stage(get_settings(), *_day(context))

    @task
    def encode_items(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import encode_stage

        return encode_stage(get_settings(), *_day(context))

    @task
    def materialize(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import features_stage

        return features_stage(get_settings(), *_day(context))

    @task(retries=0, outlets=[FEATURES])
    def check_freshness(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import freshness_stage

        return freshness_stage(get_settings(), *_day(context))

    # On Kubernetes the tasks of orchestration.kubernetes.pod_tasks run as pods of the recsys image (same stages).
    chain(
        task_or_pod(SETTINGS, extract),
        task_or_pod(SETTINGS, validate_raw),
        *dbt,
        task_or_pod(SETTINGS, validate_marts),
        task_or_pod(SETTINGS, encode_items),
        task_or_pod(SETTINGS, materialize),
        task_or_pod(SETTINGS, check_freshness),
    )


recsys_features()
