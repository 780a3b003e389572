"""``warehouse.target: postgres`` end to end: the pipeline stages on a small simulated site, with the marts and
the item embeddings in PostgreSQL and Feast's PostgreSQL offline store, against the DuckDB run on the same lake.

One lake (seeded simulator → real extraction), two homes: the DuckDB run (marts as Parquet, DuckDB offline
store) and the PostgreSQL run (marts as tables in a fresh, uniquely named database, dropped afterwards). Both run
transform → (marts gate, Postgres only) → features (apply + materialize) → encode for the last day. BERT is
the real encoder on a tiny seeded checkpoint (tests/fixtures_bert.py).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import pytest

from conftest_raw import expected_mart_rows
from fixtures_bert import write_tiny_bert
from recsys.config import Settings
from recsys.errors import MissingMartError
from recsys.features import feature_store, historical_features, online_features
from recsys.ingest.extract import backfill
from recsys.model.inference import holdout_recent_items
from recsys.pipeline import encode_stage, features_stage, transform_stage, validate_marts_stage
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site
from recsys.transform.postgres import connect, sync_raw
from recsys.transform.warehouse import publish_embeddings, read_mart
from servers import fresh_postgres_database

pytestmark = pytest.mark.services

MARTS = ("interactions", "user_daily_features", "item_daily_features", "item_texts", "user_recent_items")
SIM = SimulationConfig(days=4, n_users=25, initial_items=15, new_items_per_day=2)
FIRST = SIM.start.date()
LAST = FIRST + timedelta(days=SIM.days - 1)
START = datetime(LAST.year, LAST.month, LAST.day, tzinfo=UTC)  # the data interval of the run: the last day
END = START + timedelta(days=1)
DIM = 32  # the tiny checkpoint's hidden size


@pytest.fixture(scope="session")
def pg_dbname() -> Iterator[str]:
    """A fresh database on the real PostgreSQL server for this test session, dropped afterwards."""
    with fresh_postgres_database("recsys_runmode") as name:
        yield name


class Runs(NamedTuple):
    duck: Settings
    pg: Settings
    pg_stages: dict[str, dict[str, Any]]  # what each stage of the PostgreSQL run returned


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, pg_dbname: str) -> Iterator[Runs]:
    """The last day's stages over one lake, on DuckDB and on PostgreSQL."""
    root = tmp_path_factory.mktemp("runmode")
    # The real encoder on a tiny seeded BERT checkpoint in Hugging Face format (no pretrained download).
    model = {"bert_checkpoint": str(write_tiny_bert(root / "tiny_bert"))}
    duck = Settings(home=root / "duck", model=model)
    write_site(duck, simulate(SIM))
    backfill(duck, FIRST, LAST)
    pg = Settings(
        home=root / "pg",
        lake_dir=duck.lake,
        warehouse={"target": "postgres", "postgres": {"dbname": pg_dbname}},
        model=model,
    )
    stages: dict[str, dict[str, Any]] = {}
    for settings in (duck, pg):
        stages["transform"] = transform_stage(settings, START, END)
        if settings is pg:  # the marts gate reads the marts through read_mart: once is enough
            stages["validate_marts"] = validate_marts_stage(settings, START, END)
        stages["features"] = features_stage(settings, START, END)
        stages["encode"] = encode_stage(settings, START, END)
    yield Runs(duck, pg, stages)


def _plain(value: object) -> object:
    """A comparable form of one cell: arrays as tuples, NaN as None."""
    if isinstance(value, list | tuple | np.ndarray):
        return tuple(np.asarray(value).tolist())
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def _rows(frame: pd.DataFrame) -> list[tuple]:
    return [tuple(_plain(v) for v in row) for row in frame.itertuples(index=False)]


def test_transform_stage_builds_the_marts_in_postgres_only(runs: Runs) -> None:
    duck, pg, _ = runs
    assert not pg.marts.exists() and not pg.duckdb_path.exists()  # nothing of the DuckDB run in the Postgres home
    assert all((duck.marts / f"{name}.parquet").is_file() for name in MARTS)
    with connect(pg.warehouse.postgres) as conn, conn.cursor() as cur:
        cur.execute("select table_name from information_schema.tables where table_schema = 'analytics'")
        tables = {row[0] for row in cur.fetchall()}
    assert {*MARTS, "item_text_embedding"} <= tables


def test_read_mart_gives_the_same_frame_from_both_warehouses(runs: Runs) -> None:
    duck, pg, _ = runs
    expected = expected_mart_rows(duck.lake)
    for name in MARTS:
        from_parquet, from_postgres = read_mart(duck, name), read_mart(pg, name)
        assert len(from_parquet) == expected[name], name
        pd.testing.assert_series_equal(from_postgres.dtypes, from_parquet.dtypes, obj=name)
        assert _rows(from_postgres) == _rows(from_parquet), name
    interactions = read_mart(pg, "interactions", columns=["user_id", "is_positive", "event_timestamp"])
    assert dict(interactions.dtypes.astype(str)) == {
        "user_id": "int64",
        "is_positive": "bool",
        "event_timestamp": "datetime64[us, UTC]",
    }
    recent = read_mart(pg, "user_recent_items")["recent_item_ids"]
    assert all(isinstance(v, np.ndarray) and v.dtype == np.int64 for v in recent)
    assert any(len(v) for v in recent)
    with pytest.raises(MissingMartError, match="transform stage"):
        read_mart(pg, "no_such_mart")
    with connect(pg.warehouse.postgres) as conn, conn, conn.cursor() as cur:
        cur.execute("create table analytics.empty_interactions as select * from analytics.interactions where false")
    empty = read_mart(pg, "empty_interactions")
    assert len(empty) == 0
    pd.testing.assert_series_equal(empty.dtypes, read_mart(duck, "interactions").dtypes)  # typed when empty too


def test_online_equals_offline_postgres_at_the_interval_end(runs: Runs) -> None:
    _, pg, _ = runs
    users = sorted(read_mart(pg, "user_daily_features")["user_id"].unique())[:8]
    items = sorted(read_mart(pg, "item_texts")["item_id"])
    store = feature_store(pg)
    for service, key, ids in [("recommender_v1_user", "user_id", users), ("recommender_v1_item", "item_id", items)]:
        entities = pd.DataFrame({key: ids, "event_timestamp": pd.Timestamp(END)})
        offline = historical_features(pg, entities, service)
        online = online_features(store, service, [{key: i} for i in ids])
        assert online[key] == ids == offline[key].tolist()
        names = [c for c in offline.columns if c not in (key, "event_timestamp")]
        assert sorted(names) == sorted(c for c in online if c != key)
        assert offline[names].notna().any().all(), service  # every feature has values to compare
        for name in names:
            for got, want in zip(online[name], offline[name], strict=True):
                if want is None or (isinstance(want, float) and np.isnan(want)):
                    assert got is None, (service, name)
                elif isinstance(got, list):
                    assert got == pytest.approx(list(want)), (service, name)
                else:
                    assert got == pytest.approx(want), (service, name)


def test_postgres_and_duckdb_offline_stores_answer_alike(runs: Runs) -> None:
    duck, pg, _ = runs
    users = sorted(read_mart(duck, "user_daily_features")["user_id"].unique())
    items = sorted(read_mart(duck, "item_texts")["item_id"])
    times = [START - timedelta(days=2, hours=12), START - timedelta(days=1), START, START + timedelta(hours=13), END]
    shuffled = np.random.default_rng(3)
    for service, key, ids in [("recommender_v1_user", "user_id", users), ("recommender_v1_item", "item_id", items)]:
        entities = pd.DataFrame([(i, pd.Timestamp(t)) for i in ids for t in times], columns=[key, "event_timestamp"])
        entities = entities.iloc[shuffled.permutation(len(entities))]
        from_duckdb = historical_features(duck, entities, service)
        from_postgres = historical_features(pg, entities, service)
        assert list(from_postgres.columns) == list(from_duckdb.columns)
        pd.testing.assert_series_equal(from_postgres.dtypes, from_duckdb.dtypes, obj=service)
        assert from_postgres[key].tolist() == entities[key].tolist()  # the caller's row order
        assert _rows(from_postgres) == _rows(from_duckdb), service
        assert from_postgres.drop(columns=[key, "event_timestamp"]).notna().any().all(), service


def test_training_set_is_the_same_from_both_warehouses(runs: Runs) -> None:
    from recsys.features import training_set

    duck, pg, _ = runs
    from_duckdb, from_postgres = training_set.build(duck, END), training_set.build(pg, END)
    positives = read_mart(pg, "interactions").query("is_positive")
    before_holdout = positives["event_timestamp"] < pd.Timestamp(from_postgres.holdout_start)
    assert len(from_postgres.train) == int(before_holdout.sum())  # one training row per positive before the holdout
    assert len(from_postgres.items) == len(read_mart(pg, "item_texts"))
    for part in ("train", "test", "items"):
        mine, theirs = getattr(from_postgres, part), getattr(from_duckdb, part)
        pd.testing.assert_series_equal(mine.dtypes, theirs.dtypes, obj=part)
        assert _rows(mine) == _rows(theirs), part
    pd.testing.assert_frame_equal(from_postgres.test_user_features, from_duckdb.test_user_features)


def test_training_rows_carry_the_point_in_time_recent_items_serving_reads(runs: Runs) -> None:
    from recsys.features import training_set

    data = training_set.build(runs.duck, END)
    positives = read_mart(runs.duck, "interactions").query("is_positive")
    day = pd.to_datetime(data.train["event_timestamp"], utc=True).dt.floor("D")
    checked = 0
    rows = zip(data.train["user_id"], day, data.train["recent_item_ids"], strict=True)
    for user, day_start, recent in rows:
        mine = positives[(positives["user_id"] == user) & (positives["event_timestamp"] < day_start)]
        # Only items the user liked before the interaction's day (the mart row of the day before), each once, <= 10.
        assert set(recent) <= set(mine["item_id"]), (user, day_start)
        assert len(recent) == len(set(recent)) == min(mine["item_id"].nunique(), 10), (user, day_start)
        checked += len(recent) > 0
    assert checked > 0  # some rows do have a history
    users = data.test_user_features.index
    assert set(holdout_recent_items(data.test_user_features, data.train)) <= set(users)


def test_stage_summaries_of_the_postgres_run(runs: Runs) -> None:
    stages = runs.pg_stages
    assert stages["transform"]["success"]
    assert stages["transform"]["raw_partitions_copied"] == {"events": SIM.days, "items": SIM.days}
    gates = stages["validate_marts"]["gates"]
    assert set(gates) == set(MARTS) and all(gate["success"] for gate in gates.values())
    assert stages["encode"]["encoded"] == len(read_mart(runs.pg, "item_texts"))


def test_transform_rerun_copies_nothing_and_changes_nothing(runs: Runs) -> None:
    _, pg, _ = runs
    before = {name: _rows(read_mart(pg, name)) for name in MARTS}
    summary = transform_stage(pg, START, END)
    assert summary["success"] and summary["raw_partitions_copied"] == {"events": 0, "items": 0}
    assert {name: _rows(read_mart(pg, name)) for name in MARTS} == before


def test_sync_raw_copies_new_and_rewritten_partitions_and_drops_removed_ones(runs: Runs, tmp_path: Path) -> None:
    duck, pg, _ = runs
    lake = tmp_path / "lake"
    shutil.copytree(duck.lake / "raw", lake / "raw")
    warehouse = pg.warehouse.postgres.model_copy(update={"raw_schema": "raw_sync_test"})
    assert sync_raw(lake, warehouse) == {"events": SIM.days, "items": SIM.days}
    assert sync_raw(lake, warehouse) == {"events": 0, "items": 0}
    rewritten = lake / "raw" / "events" / f"dt={LAST}" / "part-0.parquet"
    data = rewritten.read_bytes()
    rewritten.unlink()
    rewritten.write_bytes(data + b"")  # a new file version (new mtime), same content
    shutil.rmtree(lake / "raw" / "items" / f"dt={FIRST}")
    assert sync_raw(lake, warehouse) == {"events": 1, "items": 0}
    with connect(warehouse) as conn, conn.cursor() as cur:
        cur.execute(
            'select count(*) from "raw_sync_test"."items" where _interval_start = %s', (SIM.start.replace(tzinfo=UTC),)
        )
        assert cur.fetchone() == (0,)
        cur.execute('select count(*) from "raw_sync_test"."events"')
        assert cur.fetchone() == (len(pd.read_parquet(lake / "raw" / "events")),)


def test_embeddings_table_mirrors_the_encoder_cache(runs: Runs) -> None:
    _, pg, _ = runs
    cache = pd.read_parquet(pg.embeddings_path)

    def stored() -> pd.DataFrame:
        with connect(pg.warehouse.postgres) as conn, conn.cursor() as cur:
            cur.execute(
                'select item_id, content_hash, embedding, event_timestamp from "analytics"."item_text_embedding"'
            )
            frame = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
        return frame.sort_values(["item_id", "event_timestamp"]).reset_index(drop=True)

    def same(table: pd.DataFrame) -> None:
        got = stored()
        assert got["item_id"].tolist() == table["item_id"].tolist()
        assert got["content_hash"].tolist() == table["content_hash"].tolist()
        assert pd.to_datetime(got["event_timestamp"], utc=True).tolist() == table["event_timestamp"].tolist()
        for mine, theirs in zip(got["embedding"], table["embedding"], strict=True):
            np.testing.assert_array_equal(np.asarray(mine, dtype=np.float32), theirs)  # float32 exactly

    assert len(cache) == len(read_mart(pg, "item_texts"))
    same(cache)
    assert publish_embeddings(pg, cache) == 0  # idempotent: nothing to copy
    changed = cache.assign(embedding=[np.full(DIM, 0.5, dtype=np.float32), *cache["embedding"].iloc[1:]])
    assert publish_embeddings(pg, changed.iloc[1:]) == 0  # a row gone from the cache leaves the table
    same(cache.iloc[1:].reset_index(drop=True))
    assert publish_embeddings(pg, changed, rebuilt=True) == len(changed)  # a rebuilt cache replaces every vector
    same(changed)
    publish_embeddings(pg, cache, rebuilt=True)
    same(cache)


def test_the_marts_gate_in_buckets_on_postgres_agrees_with_one_frame(runs: Runs) -> None:
    """Each mart's interval rows streamed from Postgres and gated in buckets of 3 rows: the same verdicts and
    counts as in one frame, and the same rows as the DuckDB marts of the interval."""
    from recsys.transform.warehouse import interval_rows
    from recsys.validation.marts import gate_marts

    pg = runs.pg
    small = pg.model_copy(update={"quality": pg.quality.model_copy(update={"chunk_rows": 3})})
    whole, in_buckets = gate_marts(pg, START, END), gate_marts(small, START, END)
    for mart in MARTS:
        assert in_buckets[mart].success and whole[mart].success, in_buckets[mart].summary()
        counts = (in_buckets[mart].evaluated_expectations, in_buckets[mart].successful_expectations)
        assert counts == (whole[mart].evaluated_expectations, whole[mart].successful_expectations)
        rows = interval_rows(pg, mart, START, END)[0]
        assert rows == interval_rows(runs.duck, mart, START, END)[0] > 0
        stored = json.loads(in_buckets[mart].result_path.read_text())
        assert stored["chunked"]["rows"] == rows if rows > 3 else "chunked" not in stored
