"""
### recsys_daily

The daily workflow for one data interval ``[data_interval_start, data_interval_end)``:

extract (sources → raw Parquet) → GX gates on raw items and events (a failing partition is quarantined) →
``dbt build`` (staging → intermediate → marts, with tests) → GX gates on the marts → Feast apply +
materialize → BERT item encoding (new/changed items only) → two-tower training on Feast point-in-time
features → evaluation against popularity on a time-based holdout → BentoML model store (candidate) →
promotion gate (does it beat production on the same holdout?) → versioned bento, built only for a promoted
model.

Each task is a thin wrapper over a ``recsys.pipeline`` stage: the same function the CLI and the tests call.
Configuration comes from ``RECSYS_*`` environment variables (or the YAML file named by ``RECSYS_CONFIG``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import Asset, CronDataIntervalTimetable, dag, task

RAW_EVENTS = Asset("recsys://lake/raw/events")
MARTS = Asset("recsys://warehouse/marts")
MODEL = Asset("recsys://bentoml/models/recommender")
BENTO = Asset("recsys://bentoml/bentos/recommender")


def _interval(context: dict) -> tuple[datetime, datetime]:
    """The run's data interval as plain stdlib UTC datetimes.

    Airflow hands over pendulum DateTimes, whose arithmetic can drop the timezone; the stages get stdlib ones.
    Refuses runs without a data interval (asset-triggered or manual runs must carry one).
    """
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        raise ValueError("recsys_daily needs a data interval: trigger it with a logical date.")
    return datetime.fromtimestamp(start.timestamp(), tz=UTC), datetime.fromtimestamp(end.timestamp(), tz=UTC)


def _settings():  # noqa: ANN202 - imported lazily to keep DAG parsing light
    from recsys.config import get_settings

    return get_settings()


@dag(
    dag_id="recsys_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 11, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["recsys", "features", "training"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    doc_md=__doc__,
)
def recsys_daily() -> None:
    @task(outlets=[RAW_EVENTS])
    def extract(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import extract_stage

        return extract_stage(_settings(), *_interval(context))

    @task(retries=0)
    def validate_raw(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import validate_raw_stage

        return validate_raw_stage(_settings(), *_interval(context))

    @task(outlets=[MARTS])
    def dbt_build(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import transform_stage

        return transform_stage(_settings(), *_interval(context))

    @task(retries=0)
    def validate_marts(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import validate_marts_stage

        return validate_marts_stage(_settings(), *_interval(context))

    @task
    def materialize(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import features_stage

        return features_stage(_settings(), *_interval(context))

    @task
    def encode_items(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import encode_stage

        return encode_stage(_settings(), *_interval(context))

    @task
    def train(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import train_stage

        return train_stage(_settings(), *_interval(context))

    @task
    def evaluate(**context) -> dict:  # noqa: ANN003
        from recsys.pipeline import evaluate_stage

        return evaluate_stage(_settings(), _interval(context)[0])

    @task(outlets=[MODEL])
    def register(**context) -> str:  # noqa: ANN003
        from recsys.pipeline import register_stage

        return register_stage(_settings(), _interval(context)[0])["model_tag"]

    @task.short_circuit
    def promote(model_tag: str, **context) -> bool:  # noqa: ANN003
        """False (and the bento build is skipped) when the candidate does not beat production."""
        from recsys.pipeline import gate_stage

        return bool(gate_stage(_settings(), _interval(context)[0], model_tag)["promoted"])

    @task(outlets=[BENTO])
    def build_bento(model_tag: str, **context) -> dict:  # noqa: ANN003
        from recsys.pipeline import bento_stage

        return bento_stage(_settings(), _interval(context)[0], model_tag)

    tag = register()
    gated = extract() >> validate_raw() >> dbt_build() >> validate_marts()
    gated >> materialize() >> encode_items() >> train() >> evaluate() >> tag
    promote(tag) >> build_bento(tag)


recsys_daily()
