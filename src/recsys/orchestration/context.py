"""A DAG task's data interval, from whatever its run carries.

A run of ``recsys_features`` is one UTC day, of ``recsys_training`` one ISO week (Monday to Monday). The
period comes, in this order, from the run's partition key (scheduled and backfilled runs of the partitioned
DAGs: ``YYYY-MM-DD``, or ``YYYY-MM-DD (Www)`` for a week), from the run's conf (``{"day": "YYYY-MM-DD"}`` or
``{"week": "YYYY-MM-DD"}``, for a run triggered by hand or with ``airflow dags test -c``), or from a non-empty
data interval. Anything else is refused with what to pass; nothing ever falls back to ``now()``.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Literal

from recsys import lake
from recsys.errors import ConfigError

Period = Literal["day", "week"]
LENGTH = {"day": timedelta(days=1), "week": timedelta(days=7)}


def _partition_key(context: dict[str, Any]) -> str | None:
    run = context.get("dag_run")
    return getattr(run, "partition_key", None) or context.get("partition_key") or None


def _conf(context: dict[str, Any]) -> dict[str, Any]:
    run = context.get("dag_run")
    conf = dict(getattr(run, "conf", None) or {})
    params = context.get("params") or {}
    return {**{k: v for k, v in dict(params).items() if v is not None}, **conf}


def _parse_day(value: object, where: str) -> date:
    text = str(value).strip()[:10]  # "2026-11-02" or "2026-11-02 (W45)" or "2026-11-02T00:00:00"
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"{where} is {value!r}: expected a UTC day such as 2026-11-02.") from None


def period_start(context: dict[str, Any], period: Period) -> date:
    """The first day of the run's ``period`` (a Monday for a week)."""
    key = _partition_key(context)
    conf = _conf(context)
    if key:
        first = _parse_day(key, "the run's partition key")
    elif conf.get(period):
        first = _parse_day(conf[period], f"the run's conf {period!r}")
    else:
        start, end = context.get("data_interval_start"), context.get("data_interval_end")
        if start is None or end is None or end <= start:
            raise ConfigError(
                f"this run has no partition key, no {period!r} in its conf and no data interval: trigger it for "
                f'a {period} with conf {{"{period}": "YYYY-MM-DD"}} (airflow dags trigger/test -c), or let the '
                "scheduler run it."
            )
        first = lake.utc(start).date()
    if period == "week" and first.weekday() != 0:
        raise ConfigError(f"week {first} is a {first:%A}: a training week starts on a Monday (ISO week).")
    return first


def interval(context: dict[str, Any], period: Period) -> tuple[datetime, datetime]:
    """``[start, end)`` of the run's day or week, as UTC datetimes."""
    start = lake.day_start(period_start(context, period))
    return start, start + LENGTH[period]


def render_period_start(
    dag_run: Any, params: Any, data_interval_start: Any, data_interval_end: Any, period: Period
) -> str:
    """:func:`period_start` as ``YYYY-MM-DD``, from the template context's variables: the Jinja macro
    ``recsys_period_start`` of the DAGs, which puts a pod task's day or week on its ``recsys stage`` command line."""
    context = {
        "dag_run": dag_run,
        "params": params,
        "data_interval_start": data_interval_start,
        "data_interval_end": data_interval_end,
    }
    return period_start(context, period).isoformat()
