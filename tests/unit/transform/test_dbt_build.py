"""dbt build on a tiny, hand-checkable raw lake: mart contents, point-in-time rule, idempotency, errors.

Lake (UTC): items 10, 11, 12, 13 (item 11 gets a second version on day 2); users 1, 2, 3.
  04-03 12:00 u3 i13 impression            (29 days before 05-01: outside u3's 05-01 window)
  04-04 12:00 u3 i13 impression            (28th day of u3's 05-01 window)
  05-01 09:00 u1 i10 impression  e1 | 09:01 u1 i10 click e2 | 10:00 u2 i11 impression e3 | 11:00 u3 i13 impression
  05-02 08:00 u1 i11 impression  e4 | 08:05 u1 i11 rating 4 e5 | 12:00 u2 i10 rating 3 e6 | 23:59 u1 i12 impression e7
  05-03 00:00 u1 i12 click e8 (exactly day 2's end) | 06:00 u1 i10 like e9 | e4 delivered again
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from conftest_raw import event, item, utc, write_partition
from recsys.config import Settings
from recsys.errors import TransformError
from recsys.transform.dbt import DbtBuildResult, build

MARTS = ("interactions", "user_daily_features", "item_daily_features", "item_texts", "user_recent_items")
D1, D2, D3 = date(2024, 5, 1), date(2024, 5, 2), date(2024, 5, 3)


def write_lake(lake: Path) -> None:
    write_partition(
        lake, "items", D1, [item(i, utc(2024, 5, 1), tags=["a", "b"] if i == 10 else []) for i in (10, 11, 12, 13)]
    )
    write_partition(lake, "items", D2, [item(11, utc(2024, 5, 2, 7), title="Item 11 v2")])
    write_partition(lake, "events", date(2024, 4, 3), [event("u3a", 3, 13, "impression", utc(2024, 4, 3, 12))])
    write_partition(lake, "events", date(2024, 4, 4), [event("u3b", 3, 13, "impression", utc(2024, 4, 4, 12))])
    e4 = event("e4", 1, 11, "impression", utc(2024, 5, 2, 8))
    write_partition(lake, "events", D1, [
        event("e1", 1, 10, "impression", utc(2024, 5, 1, 9)),
        event("e2", 1, 10, "click", utc(2024, 5, 1, 9, 1)),
        event("e3", 2, 11, "impression", utc(2024, 5, 1, 10)),
        event("u3c", 3, 13, "impression", utc(2024, 5, 1, 11)),
    ])  # fmt: skip
    write_partition(lake, "events", D2, [
        e4,
        event("e5", 1, 11, "rating", utc(2024, 5, 2, 8, 5), value=4.0),
        event("e6", 2, 10, "rating", utc(2024, 5, 2, 12), value=3.0),
        event("e7", 1, 12, "impression", utc(2024, 5, 2, 23, 59)),
    ])  # fmt: skip
    write_partition(lake, "events", D3, [
        event("e8", 1, 12, "click", utc(2024, 5, 3, 0, 0)),
        event("e9", 1, 10, "like", utc(2024, 5, 3, 6)),
        e4,
    ])  # fmt: skip


def read_marts(settings: Settings) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(settings.marts / f"{name}.parquet") for name in MARTS}


@pytest.fixture(scope="module")
def clean_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("RECSYS_")]:
            mp.delenv(key)
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, clean_env: None) -> tuple[Settings, DbtBuildResult]:
    settings = Settings(home=tmp_path_factory.mktemp("dbt") / "home")
    write_lake(settings.lake)
    return settings, build(settings)


@pytest.fixture(scope="module")
def marts(built: tuple[Settings, DbtBuildResult]) -> dict[str, pd.DataFrame]:
    return read_marts(built[0])


def rows(frame: pd.DataFrame, key: str) -> dict[tuple, tuple]:
    """{(key, feature_date): (impressions, clicks, ctr)} of a daily features mart."""
    prefix = key.split("_")[0]
    cols = [f"{prefix}_impressions_28d", f"{prefix}_clicks_28d", f"{prefix}_ctr_28d"]
    return {(r[key], r["feature_date"]): tuple(r[c] for c in cols) for _, r in frame.iterrows()}


def test_build_passes_every_model_and_test(built: tuple[Settings, DbtBuildResult]) -> None:
    settings, result = built
    statuses = result.statuses()
    assert result.success and not result.failed
    assert all(statuses[m] == "success" for m in (*MARTS, "stg_app__events", "stg_catalog__items"))
    assert statuses["assert_recent_items_are_point_in_time"] == "pass"
    assert statuses["interactions_marks_positive_events"] == "pass"  # the dbt unit test
    assert sum(n.resource_type == "test" for n in result.nodes) >= 40
    assert result.summary()["success"] is True
    assert all((settings.marts / f"{m}.parquet").is_file() for m in MARTS)
    assert not (Path(__file__).parents[3] / "dbt" / "target").exists(), "dbt must not write into the repo"


def test_interactions_one_row_per_event_marked_positive_or_not(marts: dict[str, pd.DataFrame]) -> None:
    fct = marts["interactions"]
    assert list(fct.columns) == [
        "event_id", "user_id", "item_id", "event_type", "is_positive", "occurred_at", "event_timestamp",
    ]  # fmt: skip
    assert len(fct) == 12 and fct["event_id"].is_unique  # e4 was delivered twice
    positives = set(fct.loc[fct["is_positive"], "event_id"])
    assert positives == {"e2", "e5", "e8", "e9"}  # click, rating 4, click, like; rating 3 is not positive
    assert (fct["event_timestamp"] == fct["occurred_at"]).all()
    assert str(fct["occurred_at"].dtype) == "datetime64[us, UTC]"


def test_user_daily_features_counts_28_days_up_to_the_day_end(marts: dict[str, pd.DataFrame]) -> None:
    frame = marts["user_daily_features"]
    assert rows(frame, "user_id") == {
        (1, D1): (1, 1, 2 / 11),
        (1, D2): (3, 1, 2 / 13),  # e8 at 05-03 00:00 is day 2's end: not counted (point in time)
        (1, D3): (3, 2, 3 / 13),
        (2, D1): (1, 0, 1 / 11),
        (2, D2): (1, 0, 1 / 11),
        (3, date(2024, 4, 3)): (1, 0, 1 / 11),
        (3, date(2024, 4, 4)): (2, 0, 1 / 12),
        (3, D1): (2, 0, 1 / 12),  # 04-04 is inside the 28-day window ending 05-01, 04-03 is not
    }
    assert str(frame["user_impressions_28d"].dtype) == "int64"
    assert str(frame["user_ctr_28d"].dtype) == "float64"
    day_ends = pd.to_datetime(frame["feature_date"]).dt.tz_localize("UTC") + pd.Timedelta(days=1)
    assert (frame["event_timestamp"] == day_ends).all()


def test_item_daily_features(marts: dict[str, pd.DataFrame]) -> None:
    got = rows(marts["item_daily_features"], "item_id")
    assert got[(10, D1)] == got[(10, D2)] == got[(10, D3)] == (1, 1, 2 / 11)
    assert got[(11, D1)] == (1, 0, 1 / 11)
    assert got[(11, D2)] == (2, 0, 1 / 12)
    assert got[(12, D2)] == (1, 0, 1 / 11)  # e8's click lands on day 3 only
    assert got[(12, D3)] == (1, 1, 2 / 11)
    assert len(got) == 10


def test_user_recent_items_distinct_newest_first_before_day_end(marts: dict[str, pd.DataFrame]) -> None:
    frame = marts["user_recent_items"]
    got = {(r.user_id, r.feature_date): list(r.recent_item_ids) for r in frame.itertuples()}
    assert got[(1, D1)] == [10]
    assert got[(1, D2)] == [11, 10]  # e8 (item 12 at day 2's end) is not visible yet
    assert got[(1, D3)] == [10, 12, 11]  # item 10 again (like at 06:00) moves to the front, once
    assert got[(2, D1)] == got[(2, D2)] == []  # a rating of 3 is not a positive
    assert len(got) == 8


def test_item_texts_latest_version_and_hash(marts: dict[str, pd.DataFrame]) -> None:
    texts = marts["item_texts"].set_index("item_id")
    assert list(texts.index) == [10, 11, 12, 13]
    assert texts.loc[10, "text"] == "Item 10 | news | a, b | Body of item 10."
    assert texts.loc[11, "title"] == "Item 11 v2"
    assert texts.loc[11, "event_timestamp"] == pd.Timestamp("2024-05-02 07:00", tz="UTC")
    for text, content_hash in zip(texts["text"], texts["content_hash"], strict=True):
        assert content_hash == hashlib.md5(text.encode()).hexdigest()


def test_rebuild_is_idempotent_and_later_data_leaves_past_rows(
    built: tuple[Settings, DbtBuildResult], marts: dict[str, pd.DataFrame]
) -> None:
    settings, _ = built
    build(settings)
    again = read_marts(settings)
    for name in MARTS:
        pd.testing.assert_frame_equal(again[name], marts[name], obj=name)

    write_partition(settings.lake, "events", date(2024, 5, 4), [event("e10", 1, 11, "click", utc(2024, 5, 4, 1))])
    build(settings, full_refresh=True)
    later = read_marts(settings)
    past = later["user_daily_features"]["feature_date"] <= D3
    pd.testing.assert_frame_equal(
        later["user_daily_features"][past].reset_index(drop=True), marts["user_daily_features"], obj="past rows"
    )
    recent = later["user_recent_items"].set_index(["user_id", "feature_date"])["recent_item_ids"]
    assert list(recent[(1, date(2024, 5, 4))]) == [11, 10, 12]


def test_missing_raw_table_is_a_clear_error(settings: Settings) -> None:
    write_partition(settings.lake, "events", D1, [event("e1", 1, 10, "click", utc(2024, 5, 1))])
    with pytest.raises(TransformError, match=r"no partition for items.*Run the extract stage"):
        build(settings)


def test_failed_data_test_names_the_node(settings: Settings) -> None:
    write_lake(settings.lake)
    write_partition(settings.lake, "events", D1, [event("orphan", 1, 99, "click", utc(2024, 5, 1, 9))])

    with pytest.raises(TransformError) as failure:
        build(settings, select="+interactions stg_catalog__items")

    message = str(failure.value)
    assert "1 node(s) failed" in message
    assert "relationships_interactions_item_id" in message
    assert "Got 1 result" in message


def test_empty_mart_is_a_zero_row_parquet(settings: Settings) -> None:
    write_lake(settings.lake)
    for day in (date(2024, 4, 3), date(2024, 4, 4), D1, D2, D3):
        write_partition(settings.lake, "events", day, [])

    build(settings, select="+interactions stg_catalog__items")

    fct = pd.read_parquet(settings.marts / "interactions.parquet")
    assert fct.empty
    assert list(fct.columns)[:3] == ["event_id", "user_id", "item_id"]


def test_recent_items_limit_comes_from_the_settings(tmp_path: Path, clean_env: None) -> None:
    settings = Settings(home=tmp_path / "home", recent_items_limit=2)
    write_lake(settings.lake)

    build(settings, select="+user_recent_items")

    frame = pd.read_parquet(settings.marts / "user_recent_items.parquet")
    got = {(r.user_id, r.feature_date): list(r.recent_item_ids) for r in frame.itertuples()}
    assert got[(1, D3)] == [10, 12]  # the newest two of [10, 12, 11]


def test_after_a_build_another_process_can_open_the_warehouse(built: tuple[Settings, DbtBuildResult]) -> None:
    """dbt-duckdb keeps its database open for the process's life; build() releases it (else an Airflow task or a
    second build in another process fails on the file lock)."""
    import subprocess
    import sys

    settings, _ = built
    probe = f"import duckdb; duckdb.connect({str(settings.duckdb_path)!r}).execute('select 1').fetchall()"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-500:]
