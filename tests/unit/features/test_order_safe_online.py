"""Order-safe online writes: re-materializing an older interval never replaces newer online values.

Feast's own SQLite store writes older values back (the first test shows it, so the guard is not a no-op);
recsys' SQLite store and Feast's Redis store keep the newer row. Every test runs a real apply + materialize on
tiny user marts: user 1 has a row stamped at the end of DAY1 (10 impressions, recent [10]) and one stamped at
the end of DAY2 (20 impressions, recent [11, 10]); user 2 has a DAY1 row only.
"""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.config import Settings
from recsys.features import PROJECT, apply, definitions, feature_store, materialize, online_features
from recsys.features.online_sqlite import TRIGGER_SUFFIX, OrderSafeSqliteOnlineStore
from recsys.serving.online import SqliteRows, UserRow, open_online_rows
from servers import unavailable

# Feast's DuckDB offline store goes through ibis, which calls a deprecated duckdb method.
pytestmark = pytest.mark.filterwarnings("ignore:fetch_arrow_table:DeprecationWarning")

TS = pa.timestamp("us", tz="UTC")
DAY1, DAY2 = date(2024, 1, 1), date(2024, 1, 2)
END1 = datetime(2024, 1, 2, tzinfo=UTC)  # rows of DAY1 are stamped here
END2 = datetime(2024, 1, 3, tzinfo=UTC)  # rows of DAY2
START = datetime(2023, 12, 1, tzinfo=UTC)
OLDER = (START, END1)  # the interval holding only DAY1's rows
NEWER = (END1 + timedelta(seconds=1), END2)  # the interval holding only DAY2's rows
VIEWS = ["user_stats", "user_recent_items"]
SERVICE = "recommender_v1_user"
NAMES = ["user_impressions_28d", "user_clicks_28d", "user_ctr_28d"]
# (user, day, impressions, clicks, ctr, recent items)
ROWS = [(1, DAY1, 10, 2, 0.2, [10]), (1, DAY2, 20, 5, 0.25, [11, 10]), (2, DAY1, 4, 0, 0.1, [11])]
NEWEST = {"user_impressions_28d": [20, 4], "user_ctr_28d": [0.25, 0.1], "recent_item_ids": [[11, 10], [11]]}
OLDEST = {"user_impressions_28d": [10, 4], "user_ctr_28d": [0.2, 0.1], "recent_item_ids": [[10], [11]]}
SQLITE_COLUMNS = ["entity_key", "feature_name", "value", "value_text", "vector_value", "event_ts", "created_ts"]


def _stamp(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def _write_user_marts(settings: Settings, rows: list[tuple] = ROWS) -> None:
    marts = settings.marts
    marts.mkdir(parents=True, exist_ok=True)
    common = {
        "user_id": pa.array([r[0] for r in rows], pa.int64()),
        "feature_date": pa.array([r[1] for r in rows], pa.date32()),
        "event_timestamp": pa.array([_stamp(r[1]) for r in rows], TS),
    }
    stats = {
        "user_impressions_28d": pa.array([r[2] for r in rows], pa.int64()),
        "user_clicks_28d": pa.array([r[3] for r in rows], pa.int64()),
        "user_ctr_28d": pa.array([r[4] for r in rows], pa.float64()),
    }
    pq.write_table(pa.table({**common, **stats}), marts / "user_daily_features.parquet")
    recent = {"recent_item_ids": pa.array([r[5] for r in rows], pa.list_(pa.int64()))}
    pq.write_table(pa.table({**common, **recent}), marts / "user_recent_items.parquet")


def _online(settings: Settings, project: str = PROJECT) -> dict[str, list]:
    got = online_features(feature_store(settings, project=project), SERVICE, [{"user_id": 1}, {"user_id": 2}])
    return {name: got[name] for name in NEWEST}


def _materialize(settings: Settings, window: tuple[datetime, datetime], project: str = PROJECT) -> None:
    materialize(settings, *window, VIEWS, project=project, chunk=END2 - START)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Embedded settings with the tiny user marts written and the feature repo applied (nothing materialized)."""
    s = Settings(home=tmp_path / "home")
    _write_user_marts(s)
    apply(s)
    return s


def _plain_feast_store(settings: Settings) -> object:
    """A FeatureStore on the same files with Feast's own SQLite online store (what recsys used before)."""
    from feast import FeatureStore
    from feast.repo_config import RepoConfig

    config = RepoConfig(
        project=PROJECT,
        provider="local",
        registry=str(settings.feast_registry),
        offline_store={"type": "duckdb"},
        online_store={"type": "sqlite", "path": str(settings.online_sqlite_path)},
        repo_path=settings.feast_repo,
        entity_key_serialization_version=3,
    )
    return FeatureStore(repo_path=str(settings.feast_repo), config=config)


def _triggers(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {name for (name,) in conn.execute("select name from sqlite_master where type = 'trigger'")}


def test_feasts_own_sqlite_store_writes_an_older_interval_back(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "home")
    _write_user_marts(s)
    plain = _plain_feast_store(s)
    plain.apply(definitions(s))
    for lo, hi in (NEWER, OLDER):
        plain.materialize(start_date=lo, end_date=hi, feature_views=VIEWS)

    assert _online(s) == OLDEST  # the problem the order-safe store solves
    assert _triggers(s.online_sqlite_path) == set()


def test_sqlite_keeps_the_newer_values_when_an_older_interval_is_rematerialized(settings: Settings) -> None:
    _materialize(settings, NEWER)
    assert _online(settings) == {
        "user_impressions_28d": [20, None],
        "user_ctr_28d": [0.25, None],
        "recent_item_ids": [[11, 10], None],
    }

    _materialize(settings, OLDER)

    assert _online(settings) == NEWEST  # user 1 keeps DAY2; user 2, absent before, gets its DAY1 row
    assert feature_store(settings).get_feature_view("user_stats").most_recent_end_time == END2


def test_sqlite_materializing_in_order_still_updates_and_a_rerun_stores_recomputed_values(settings: Settings) -> None:
    _materialize(settings, OLDER)
    assert _online(settings) == OLDEST

    _materialize(settings, NEWER)
    assert _online(settings) == NEWEST

    corrected = [(1, DAY2, 21, 5, 0.25, [11, 10]) if row[:2] == (1, DAY2) else row for row in ROWS]
    _write_user_marts(settings, corrected)  # DAY2 recomputed: same event time, a corrected count
    _materialize(settings, NEWER)
    assert _online(settings) == {**NEWEST, "user_impressions_28d": [21, 4]}  # a tie is rewritten


def test_the_sqlite_tables_keep_feasts_layout_with_one_guard_each(settings: Settings) -> None:
    store = feature_store(settings)
    assert isinstance(store._get_provider().online_store, OrderSafeSqliteOnlineStore)
    tables = [f"{PROJECT}_{view.name}" for view in store.list_feature_views()]
    with sqlite3.connect(settings.online_sqlite_path) as conn:
        for table in tables:
            columns = conn.execute(f'pragma table_info("{table}")').fetchall()
            assert [c[1] for c in columns] == SQLITE_COLUMNS
            assert [c[1] for c in columns if c[5]] == ["entity_key", "feature_name"]  # the primary key
    assert _triggers(settings.online_sqlite_path) == {table + TRIGGER_SUFFIX for table in tables}


def test_a_store_created_by_plain_feast_is_guarded_from_the_next_write(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "home")
    _write_user_marts(s)
    _plain_feast_store(s).apply(definitions(s))  # a var/ from before: tables without the guard
    assert _triggers(s.online_sqlite_path) == set()

    _materialize(s, NEWER)  # recsys' store: the guard is added before its first write
    _materialize(s, OLDER)

    assert _online(s) == NEWEST
    assert _triggers(s.online_sqlite_path) == {f"{PROJECT}_{v}{TRIGGER_SUFFIX}" for v in VIEWS}


def test_the_lean_reader_reads_the_order_safe_rows(settings: Settings) -> None:
    _materialize(settings, NEWER)
    _materialize(settings, OLDER)

    rows = open_online_rows(settings, SERVICE, NAMES)
    try:
        assert isinstance(rows, SqliteRows)
        assert rows.read([1, 2, 999]) == [
            UserRow([20.0, 5.0, 0.25], [11, 10]),
            UserRow([4.0, 0.0, 0.1], [11]),
            UserRow(None, []),
        ]
    finally:
        rows.close()


def _redis_settings(tmp_path: Path) -> tuple[Settings, str]:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            pass
    except OSError:
        unavailable("Redis at 127.0.0.1:6379")
    s = Settings(home=tmp_path / "home", online_store="redis", redis_url="127.0.0.1:6379")
    _write_user_marts(s)
    return s, f"{PROJECT}_order_{uuid.uuid4().hex[:10]}"  # Feast's Redis keys carry the project: no clash


@pytest.mark.services
def test_redis_keeps_the_newer_values_when_an_older_interval_is_rematerialized(tmp_path: Path) -> None:
    s, project = _redis_settings(tmp_path)
    apply(s, project=project)
    try:
        _materialize(s, NEWER, project)
        _materialize(s, OLDER, project)
        assert _online(s, project) == NEWEST
    finally:
        feature_store(s, project=project).teardown()


@pytest.mark.services
def test_redis_materializing_in_order_still_updates(tmp_path: Path) -> None:
    s, project = _redis_settings(tmp_path)
    apply(s, project=project)
    try:
        _materialize(s, OLDER, project)
        assert _online(s, project) == OLDEST
        _materialize(s, NEWER, project)
        assert _online(s, project) == NEWEST
    finally:
        feature_store(s, project=project).teardown()
