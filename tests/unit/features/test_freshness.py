"""Freshness SLAs: each feature view's age (as_of minus its newest materialization end) against its SLA.

One real Feast store per module: the user views are materialized until U_END (2024-01-08 00:00 UTC), item_stats
until I_END (2024-01-05 12:00) and item_text_embedding until E_END (2024-01-01 00:00). The default SLAs are
two days for the daily views and eight for the embeddings.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys import pipeline
from recsys.config import Settings
from recsys.errors import ConfigError, FeatureStoreError, FreshnessError
from recsys.features import apply, materialize
from recsys.features.freshness import check, require_fresh

# Feast's DuckDB offline store goes through ibis, which calls a deprecated duckdb method.
pytestmark = pytest.mark.filterwarnings("ignore:fetch_arrow_table:DeprecationWarning")

TS = pa.timestamp("us", tz="UTC")
START = datetime(2023, 12, 1, tzinfo=UTC)
U_END = datetime(2024, 1, 8, tzinfo=UTC)
I_END = datetime(2024, 1, 5, 12, tzinfo=UTC)
E_END = datetime(2024, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


def _one_row_marts(settings: Settings) -> None:
    """One row per mart and one embedding: the sources Feast materializes from (the rows do not matter here)."""
    stamp = pa.array([datetime(2024, 1, 1, tzinfo=UTC)], TS)
    day = pa.array([date(2023, 12, 31)], pa.date32())
    marts = settings.marts
    marts.mkdir(parents=True, exist_ok=True)
    for kind in ("user", "item"):
        columns = {f"{kind}_id": pa.array([1], pa.int64()), "feature_date": day, "event_timestamp": stamp}
        counts = {f"{kind}_impressions_28d": pa.array([4], pa.int64()), f"{kind}_clicks_28d": pa.array([1], pa.int64())}
        ctr = {f"{kind}_ctr_28d": pa.array([0.25], pa.float64())}
        pq.write_table(pa.table({**columns, **counts, **ctr}), marts / f"{kind}_daily_features.parquet")
    recent = {"user_id": pa.array([1], pa.int64()), "feature_date": day, "event_timestamp": stamp}
    recent["recent_item_ids"] = pa.array([[10]], pa.list_(pa.int64()))
    pq.write_table(pa.table(recent), marts / "user_recent_items.parquet")
    embedding = {"item_id": pa.array([10], pa.int64()), "content_hash": pa.array(["a" * 32])}
    embedding |= {"embedding": pa.array([[0.6, 0.8]], pa.list_(pa.float32())), "event_timestamp": stamp}
    settings.embeddings_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(embedding), settings.embeddings_path)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose views were materialized until U_END, I_END and E_END (shared: Feast calls cost seconds)."""
    path = tmp_path_factory.mktemp("freshness") / "home"
    s = Settings(home=path)
    _one_row_marts(s)
    apply(s)
    materialize(s, START, U_END, ["user_stats", "user_recent_items"])
    materialize(s, START, I_END, ["item_stats"])
    materialize(s, START, E_END, ["item_text_embedding"])
    return path


def _settings(home: Path, **slas: timedelta) -> Settings:
    defaults = Settings(home=home).orchestration.freshness_slas
    return Settings(home=home, orchestration={"freshness_slas": {**defaults, **slas}})


def _ages(views: list[Any]) -> dict[str, timedelta | None]:
    return {v.view: v.age for v in views}


def test_ages_are_as_of_minus_the_newest_materialization_end(home: Path) -> None:
    views = check(_settings(home), U_END)

    assert _ages(views) == {
        "user_stats": timedelta(0),
        "item_stats": 2 * DAY + 12 * HOUR,
        "user_recent_items": timedelta(0),
        "item_text_embedding": 7 * DAY,
    }
    assert {v.view: v.fresh for v in views} == {
        "user_stats": True,
        "item_stats": False,  # 2 days 12 h against 2 days
        "user_recent_items": True,
        "item_text_embedding": True,  # 7 days against 8
    }
    assert {v.view: v.materialized_until for v in views}["item_stats"] == I_END


def test_the_check_fails_naming_each_stale_view_its_age_and_its_sla(home: Path) -> None:
    as_of = U_END + DAY + 6 * HOUR  # 2024-01-09 06:00

    with pytest.raises(FreshnessError) as raised:
        require_fresh(_settings(home), as_of)

    message = str(raised.value)
    assert message.startswith("2 feature view(s) older than their freshness SLA at 2024-01-09T06:00:00+00:00: ")
    assert (
        "item_stats is 3 days, 18:00:00 old (materialized until 2024-01-05T12:00:00+00:00), SLA 2 days, 0:00:00"
        in message
    )
    assert (
        "item_text_embedding is 8 days, 6:00:00 old (materialized until 2024-01-01T00:00:00+00:00), "
        "SLA 8 days, 0:00:00" in message
    )
    assert "user_stats" not in message and "user_recent_items" not in message  # 1 day 6 h: fresh
    assert "recsys run --day" in message


def test_an_age_equal_to_the_sla_is_fresh_and_a_negative_age_too(home: Path) -> None:
    as_of = I_END + 2 * DAY  # item_stats exactly two days old; the user views materialized 12 h past as_of

    views = {v.view: v for v in require_fresh(_settings(home), as_of)}

    assert views["item_stats"].age == 2 * DAY and views["item_stats"].fresh
    assert views["user_stats"].age == -12 * HOUR and views["user_stats"].fresh


def test_the_stage_returns_a_json_summary_per_view_when_all_are_fresh(home: Path) -> None:
    settings = _settings(home, item_stats=3 * DAY)

    summary = pipeline.freshness_stage(settings, U_END - DAY, U_END)

    assert json.loads(json.dumps(summary)) == summary
    assert summary == {
        "user_stats": {
            "materialized_until": "2024-01-08T00:00:00+00:00",
            "age_s": 0.0,
            "sla_s": 172800.0,
            "fresh": True,
        },
        "item_stats": {
            "materialized_until": "2024-01-05T12:00:00+00:00",
            "age_s": 216000.0,  # 2.5 days
            "sla_s": 259200.0,
            "fresh": True,
        },
        "user_recent_items": {
            "materialized_until": "2024-01-08T00:00:00+00:00",
            "age_s": 0.0,
            "sla_s": 172800.0,
            "fresh": True,
        },
        "item_text_embedding": {
            "materialized_until": "2024-01-01T00:00:00+00:00",
            "age_s": 604800.0,  # 7 days
            "sla_s": 691200.0,
            "fresh": True,
        },
    }


def test_the_stage_fails_with_freshness_error_when_a_view_is_stale(home: Path) -> None:
    with pytest.raises(FreshnessError, match=r"1 feature view\(s\) .*item_stats is 2 days, 12:00:00 old"):
        pipeline.freshness_stage(_settings(home), U_END - DAY, U_END)


def test_a_view_never_materialized_is_stale(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "home")
    _one_row_marts(s)
    apply(s)
    materialize(s, START, U_END, ["user_stats", "user_recent_items"])

    with pytest.raises(FreshnessError) as raised:
        require_fresh(s, U_END)

    assert str(raised.value).startswith("2 feature view(s) older than their freshness SLA at 2024-01-08T00:00:00+00:00")
    assert "item_stats was never materialized, SLA 2 days, 0:00:00" in str(raised.value)
    assert "item_text_embedding was never materialized, SLA 8 days, 0:00:00" in str(raised.value)
    assert [v.summary()["age_s"] for v in check(s, U_END)] == [0.0, None, 0.0, None]


def test_an_sla_for_a_view_the_registry_does_not_know_is_a_config_error(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not know: \['item_stat', 'user_clicks'\].*registered: \["):
        check(_settings(home, item_stat=DAY, user_clicks=DAY), U_END)


def test_empty_or_non_positive_slas_and_naive_as_of_are_config_errors(home: Path) -> None:
    with pytest.raises(ConfigError, match="freshness_slas is empty"):
        check(Settings(home=home, orchestration={"freshness_slas": {}}), U_END)
    with pytest.raises(ConfigError, match="positive"):
        check(_settings(home, user_stats=timedelta(0)), U_END)
    with pytest.raises(ConfigError, match="timezone-aware"):
        check(_settings(home), U_END.replace(tzinfo=None))


def test_a_registry_without_views_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(FeatureStoreError, match="recsys run --day"):
        check(Settings(home=tmp_path / "home"), U_END)
