"""Feast stage on tiny marts: apply, materialize, point-in-time retrieval, online == offline, Redis."""

from __future__ import annotations

import itertools
import os
import socket
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.config import Settings
from recsys.errors import FeatureStoreError
from recsys.features import (
    PROJECT,
    apply,
    definitions,
    feature_store,
    historical_features,
    materialize,
    online_features,
)

# Feast's DuckDB offline store goes through ibis, which calls a deprecated duckdb method.
pytestmark = pytest.mark.filterwarnings("ignore:fetch_arrow_table:DeprecationWarning")

TS = pa.timestamp("us", tz="UTC")
DAY1, DAY2 = date(2024, 1, 1), date(2024, 1, 2)
END1 = datetime(2024, 1, 2, tzinfo=UTC)  # end of DAY1 = event_timestamp of DAY1 rows
END2 = datetime(2024, 1, 3, tzinfo=UTC)  # end of DAY2 = materialization end in the tests
START = datetime(2023, 12, 1, tzinfo=UTC)
EMBEDDINGS = {10: [0.6, 0.8, 0.0, 0.0], 11: [0.0, 0.0, 0.28, 0.96]}


def _ctr(clicks: int, impressions: int) -> float:
    return (clicks + 1) / (impressions + 10)


def _write(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def _daily(kind: str, rows: list[tuple[int, date, int, int]]) -> pa.Table:
    """``{kind}_daily_features`` rows (id, feature_date, impressions, clicks) as the mart has them."""
    return pa.table(
        {
            f"{kind}_id": pa.array([r[0] for r in rows], pa.int64()),
            "feature_date": pa.array([r[1] for r in rows], pa.date32()),
            "event_timestamp": pa.array([_day_end(r[1]) for r in rows], TS),
            f"{kind}_impressions_28d": pa.array([r[2] for r in rows], pa.int64()),
            f"{kind}_clicks_28d": pa.array([r[3] for r in rows], pa.int64()),
            f"{kind}_ctr_28d": pa.array([_ctr(r[3], r[2]) for r in rows], pa.float64()),
        }
    )


def _day_end(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def write_tiny_marts(settings: Settings) -> None:
    """Marts and embeddings per docs/contracts.md: users 1, 2 and items 10, 11 over two days."""
    marts = settings.marts
    _write(_daily("user", [(1, DAY1, 10, 2), (1, DAY2, 20, 5), (2, DAY1, 4, 0)]), marts / "user_daily_features.parquet")
    _write(
        _daily("item", [(10, DAY1, 8, 1), (11, DAY1, 6, 1), (11, DAY2, 16, 4)]), marts / "item_daily_features.parquet"
    )
    recent = [(1, DAY1, [10]), (1, DAY2, [11, 10]), (2, DAY1, [11])]
    _write(
        pa.table(
            {
                "user_id": pa.array([r[0] for r in recent], pa.int64()),
                "feature_date": pa.array([r[1] for r in recent], pa.date32()),
                "event_timestamp": pa.array([_day_end(r[1]) for r in recent], TS),
                "recent_item_ids": pa.array([r[2] for r in recent], pa.list_(pa.int64())),
            }
        ),
        marts / "user_recent_items.parquet",
    )
    updated = datetime(2023, 12, 31, tzinfo=UTC)
    _write(
        pa.table(
            {
                "item_id": pa.array(list(EMBEDDINGS), pa.int64()),
                "content_hash": pa.array(["a" * 32, "b" * 32]),
                "embedding": pa.array(list(EMBEDDINGS.values()), pa.list_(pa.float32())),
                "event_timestamp": pa.array([updated, updated], TS),
            }
        ),
        settings.embeddings_path,
    )


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A store with the tiny marts applied and materialized up to END2 (shared: Feast calls cost seconds)."""
    s = Settings(home=tmp_path_factory.mktemp("feast"))
    write_tiny_marts(s)
    apply(s)
    materialize(s, START, END2)
    return s


def _entities(ts: datetime, **ids: list[int]) -> pd.DataFrame:
    ((key, values),) = ids.items()
    return pd.DataFrame({key: values, "event_timestamp": [pd.Timestamp(ts)] * len(values)})


def test_definitions_load_without_touching_cwd_environ_or_modules(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RECSYS_WAREHOUSE__MARTS_DIR", raising=False)
    names = {obj.name for obj in definitions(settings)}
    assert names == {
        "user",
        "item",
        "user_stats",
        "item_stats",
        "user_recent_items",
        "item_text_embedding",
        "recommender_v1_user",
        "recommender_v1_item",
    }
    assert "RECSYS_WAREHOUSE__MARTS_DIR" not in os.environ
    assert not {"entities", "data_sources", "features", "feature_services"} & set(sys.modules)


def test_sources_point_at_settings_paths(settings: Settings) -> None:
    from feast import FeatureView

    paths = {o.name: o.batch_source.path for o in definitions(settings) if isinstance(o, FeatureView)}
    assert paths["user_stats"] == str(settings.marts / "user_daily_features.parquet")
    assert paths["item_text_embedding"] == str(settings.embeddings_path)


def test_apply_twice_is_idempotent(settings: Settings) -> None:
    store = feature_store(settings)
    before = {v.name: v.created_timestamp for v in store.list_feature_views()}
    apply(settings)
    store = feature_store(settings)
    after = {v.name: v.created_timestamp for v in store.list_feature_views()}
    assert after == before and len(after) == 4
    assert sorted(s.name for s in store.list_feature_services()) == ["recommender_v1_item", "recommender_v1_user"]
    assert sorted(e.name for e in store.list_entities()) == ["item", "user"]


def test_point_in_time_returns_the_row_valid_at_the_timestamp(settings: Settings) -> None:
    entity_df = pd.DataFrame(
        {
            "user_id": [1, 1, 1],
            "event_timestamp": pd.to_datetime(["2024-01-01T12:00:00Z", "2024-01-02T12:00:00Z", "2024-01-03T00:00:00Z"]),
        }
    )
    df = historical_features(settings, entity_df, "recommender_v1_user").sort_values("event_timestamp")
    impressions = df["user_impressions_28d"].tolist()
    assert pd.isna(impressions[0])  # no row stamped before the first day ended
    assert impressions[1:] == [10, 20]  # a later row (DAY2, stamped END2) is not leaked into 2024-01-02 12:00
    assert list(df["recent_item_ids"].iloc[1]) == [10]
    assert list(df["recent_item_ids"].iloc[2]) == [11, 10]


def test_online_equals_offline_at_materialization_end(settings: Settings) -> None:
    for service, key, ids in [("recommender_v1_user", "user_id", [1, 2]), ("recommender_v1_item", "item_id", [10, 11])]:
        offline = historical_features(settings, _entities(END2, **{key: ids}), service).set_index(key).loc[ids]
        online = online_features(feature_store(settings), service, [{key: i} for i in ids])
        assert online[key] == ids
        features = [c for c in offline.columns if c != "event_timestamp"]
        assert sorted(features) == sorted(c for c in online if c != key)
        for name in features:
            for got, want in zip(online[name], offline[name], strict=True):
                if isinstance(got, list):
                    assert got == pytest.approx(list(want))
                else:
                    assert got == pytest.approx(want)


def test_array_features_round_trip(settings: Settings) -> None:
    online = online_features(feature_store(settings), "recommender_v1_item", [{"item_id": 10}, {"item_id": 11}])
    assert online["embedding"][0] == pytest.approx(EMBEDDINGS[10])
    assert online["embedding"][1] == pytest.approx(EMBEDDINGS[11])
    user = online_features(feature_store(settings), "recommender_v1_user", [{"user_id": 1}])
    assert user["recent_item_ids"] == [[11, 10]]
    assert user["user_ctr_28d"] == [pytest.approx(_ctr(5, 20))]


def test_unknown_entity_gets_none_online(settings: Settings) -> None:
    online = online_features(feature_store(settings), "recommender_v1_user", [{"user_id": 999}])
    assert online["user_impressions_28d"] == [None]


def test_window_end_row_is_materialized_and_later_rows_are_not(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    write_tiny_marts(s)
    apply(s)
    materialize(s, START, END1, views=["user_stats"])  # data interval DAY1: its rows are stamped END1
    online = online_features(feature_store(s), "recommender_v1_user", [{"user_id": 1}, {"user_id": 2}])
    assert online["user_impressions_28d"] == [10, 4]
    assert online["recent_item_ids"] == [None, None]  # view not selected


def test_errors_say_what_to_do(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(FeatureStoreError, match="not registered"):
        online_features(feature_store(settings), "recommender_v9_user", [{"user_id": 1}])
    with pytest.raises(FeatureStoreError, match="Unknown feature views"):
        materialize(settings, START, END2, views=["nope"])
    with pytest.raises(FeatureStoreError, match="timezone-aware"):
        materialize(settings, START.replace(tzinfo=None), END2)
    with pytest.raises(FeatureStoreError, match="event_timestamp"):
        historical_features(settings, pd.DataFrame({"user_id": [1]}), "recommender_v1_user")
    empty = Settings(home=tmp_path)
    with pytest.raises(FeatureStoreError, match="apply"):
        materialize(empty, START, END2)
    apply(empty)
    with pytest.raises(FeatureStoreError, match="marts"):
        materialize(empty, START, END2)


def _redis_reachable(host: str = "127.0.0.1", port: int = 6379) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.mark.services
def test_redis_online_store_matches_offline(tmp_path: Path) -> None:
    if not _redis_reachable():
        if os.environ.get("RECSYS_REQUIRE_SERVICES") == "1":
            pytest.fail("Redis at 127.0.0.1:6379 is unreachable and RECSYS_REQUIRE_SERVICES=1.")
        pytest.skip("Redis at 127.0.0.1:6379 is unreachable.")
    s = Settings(home=tmp_path, online_store="redis", redis_url="127.0.0.1:6379")
    project = f"{PROJECT}_test_{uuid.uuid4().hex[:10]}"  # Feast's Redis keys carry the project
    write_tiny_marts(s)
    apply(s, project=project)
    try:
        materialize(s, START, END2, project=project)
        online = online_features(feature_store(s, project=project), "recommender_v1_user", [{"user_id": 1}])
        offline = historical_features(s, _entities(END2, user_id=[1]), "recommender_v1_user", project=project)
        assert online["user_impressions_28d"] == offline["user_impressions_28d"].tolist() == [20]
        assert online["recent_item_ids"] == [[11, 10]]
    finally:
        feature_store(s, project=project).teardown()


def test_materialization_windows_are_contiguous_and_bounded() -> None:
    from datetime import UTC, datetime, timedelta

    from recsys.features.store import windows

    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 20, tzinfo=UTC)
    pieces = windows(start, end, timedelta(days=7))
    assert pieces[0][0] == start and pieces[-1][1] == end
    assert all(hi - lo <= timedelta(days=7) for lo, hi in pieces)
    assert all(b[0] - a[1] == timedelta(microseconds=1) for a, b in itertools.pairwise(pieces))
    assert windows(start, start, timedelta(days=1)) == [(start, start)]
