"""
### recsys_training

One ISO week of training, partitioned by week (partition key: the Monday, ``YYYY-MM-DD``): the scheduler
starts it when all seven daily partitions of the week's ``recsys_features`` asset have arrived (a rollup of
daily partitions, waiting for all of them). A week by hand: conf ``{"week": "YYYY-MM-DD"}`` (a Monday).

point-in-time training set (Feast) → train (on ``orchestration.train_pool`` / ``train_queue``, so a GPU
worker can take it) → the evaluation protocol against popularity and EASE, with the HTML report kept per run →
BentoML model store (candidate) → promotion gate (does it beat production on the same holdout? its status is
stored on the model) → versioned bento → infra validation (served on a free port: readiness, a known user, an
unknown user, a bad request, p99 within budget) → deploy (the production pointer ``recsys serve`` runs).

Each task is a thin wrapper over a ``recsys.pipeline`` stage: the same function the CLI and the tests call; with
``orchestration.executor: kubernetes`` the tasks of ``orchestration.kubernetes.pod_tasks`` run that stage as
``recsys stage <task> <week>`` in a pod of the recsys image (docs/scale-out.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from airflow.sdk import (
    Param,
    PartitionedAssetTimetable,
    RollupMapper,
    StartOfWeekMapper,
    WaitForAll,
    WeekWindow,
    chain,
    dag,
    task,
)

from recsys.config import get_settings
from recsys.orchestration.assets import BENTO, FEATURES, MODEL
from recsys.orchestration.kubernetes import task_or_pod, train_tasks, user_defined_macros

SETTINGS = get_settings()  # settings only: no connection, no heavy import at parse time
ORCHESTRATION = SETTINGS.orchestration
WEEK_OF_DAYS = RollupMapper(
    upstream_mapper=StartOfWeekMapper(input_format="%Y-%m-%d", output_format="%Y-%m-%d"),
    window=WeekWindow(),
    wait_policy=WaitForAll(),
)


def _week(context: dict) -> tuple[datetime, datetime]:
    from recsys.orchestration.context import interval

    return interval(context, "week")


@dag(
    dag_id="recsys_training",
    schedule=PartitionedAssetTimetable(assets=FEATURES, default_partition_mapper=WEEK_OF_DAYS),
    start_date=datetime.combine(ORCHESTRATION.start_date, time(), tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["recsys", "training"],
    default_args={
        "retries": 1 if ORCHESTRATION.retries is None else ORCHESTRATION.retries,
        "retry_delay": timedelta(minutes=5),
    },
    params={"week": Param(None, type=["null", "string"], description="Monday YYYY-MM-DD (manual runs only).")},
    user_defined_macros=user_defined_macros(),
    doc_md=__doc__,
)
def recsys_training() -> None:
    @task
    def training_set(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import training_set_stage

        return training_set_stage(get_settings(), *_week(context))

    @task(pool=ORCHESTRATION.train_pool, queue=ORCHESTRATION.train_queue or "default")
    def train(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import train_stage

        return train_stage(get_settings(), *_week(context))

    @task
    def evaluate(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import evaluate_stage

        return evaluate_stage(get_settings(), _week(context)[0])

    @task(outlets=[MODEL])
    def register(**context) -> str:  # noqa: ANN003
        from recsys.pipeline import register_stage

        return register_stage(get_settings(), _week(context)[0])["model_tag"]

    @task.short_circuit(retries=0)
    def promote(model_tag: str, **context) -> bool:  # noqa: ANN003
        """False (and the bento is neither built nor deployed) when the candidate does not beat production."""
        from recsys.pipeline import gate_stage

        return bool(gate_stage(get_settings(), _week(context)[0], model_tag)["promoted"])

    @task(outlets=[BENTO])
    def build_bento(model_tag: str, **context) -> str:  # noqa: ANN003
        from recsys.pipeline import bento_stage

        return bento_stage(get_settings(), _week(context)[0], model_tag)["bento_tag"]

    @task(retries=0)
    def infra_validate(bento_tag: str, **context) -> dict:  # noqa: ANN003
        from recsys.pipeline import infra_validate_stage

        return infra_validate_stage(get_settings(), _week(context)[0], bento_tag)

    @task(retries=0)
    def deploy(bento_tag: str, model_tag: str, **context) -> dict:  # noqa: ANN003
        from recsys.pipeline import deploy_stage

        return deploy_stage(get_settings(), _week(context)[0], bento_tag, model_tag)

    model_tag = register()
    # On Kubernetes the tasks of orchestration.kubernetes.pod_tasks run as pods of the recsys image; train as one
    # pod per TensorFlow worker when orchestration.kubernetes.train_workers > 1 (MultiWorkerMirroredStrategy).
    chain(task_or_pod(SETTINGS, training_set), train_tasks(SETTINGS, train), task_or_pod(SETTINGS, evaluate), model_tag)
    bento_tag = build_bento(model_tag)
    chain(promote(model_tag), bento_tag, infra_validate(bento_tag), deploy(bento_tag, model_tag))


recsys_training()
