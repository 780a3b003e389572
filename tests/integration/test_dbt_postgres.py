"""Both dbt targets build the same models from the same raw lake and agree row for row.

The lake comes from the seeded simulator through the real extraction (SQLite source). DuckDB reads the
Parquet partitions in place and exports the marts as Parquet; PostgreSQL gets the partitions copied into
``raw.<table>`` by ``load_raw`` and builds the marts as tables in a fresh, uniquely named database.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta

import pandas as pd
import pytest

from conftest_raw import expected_mart_rows, item, utc, write_partition
from recsys.config import PostgresSettings, Settings
from recsys.ingest.extract import backfill
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site
from recsys.transform.dbt import build
from recsys.transform.postgres import connect, load_raw
from servers import fresh_postgres_database

pytestmark = pytest.mark.services

MARTS = {
    "interactions": ["event_id"],
    "user_daily_features": ["user_id", "feature_date"],
    "item_daily_features": ["item_id", "feature_date"],
    "item_texts": ["item_id"],
    "user_recent_items": ["user_id", "feature_date"],
}
SIM = SimulationConfig(days=4, n_users=25, initial_items=15, new_items_per_day=2)
FIRST = SIM.start.date()
LAST = FIRST + timedelta(days=SIM.days - 1)


@pytest.fixture(scope="module")
def warehouse() -> Iterator[PostgresSettings]:
    """A fresh database on the real PostgreSQL server, dropped afterwards."""
    with fresh_postgres_database("recsys_dbt") as name:
        yield PostgresSettings(dbname=name)


@pytest.fixture(scope="module")
def lake_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("both") / "home")
    write_site(settings, simulate(SIM))
    backfill(settings, FIRST, LAST)
    # an item version whose text needs escaping on its way into PostgreSQL (quotes, commas, backslash, newline)
    tricky = item(999, utc(LAST.year, LAST.month, LAST.day, 1), title='Say "hi", all', body="a\\b\nc",
                  tags=['x,y', 'q"t', "back\\slash"])  # fmt: skip
    write_partition(settings.lake, "items", LAST + timedelta(days=1), [tricky])
    return settings


def postgres_marts(warehouse: PostgresSettings) -> dict[str, pd.DataFrame]:
    with connect(warehouse) as conn, conn.cursor() as cur:
        frames = {}
        for name in MARTS:
            cur.execute(f'select * from "{warehouse.schema_name}"."{name}"')
            frames[name] = pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description])
    return frames


def normalised(frame: pd.DataFrame, keys: list[str]) -> list[tuple]:
    """Rows as plain, comparable tuples sorted by key: UTC timestamps, dates, int lists, rounded floats."""

    def plain(value: object) -> object:
        if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
            return tuple(int(v) for v in list(value))
        if isinstance(value, float):
            return None if math.isnan(value) else round(value, 12)
        if isinstance(value, pd.Timestamp) or hasattr(value, "tzinfo"):
            ts = pd.Timestamp(value)
            return ts.tz_convert("UTC") if ts.tzinfo else ts
        if hasattr(value, "item"):
            return value.item()
        return value

    ordered = frame.sort_values(keys).reset_index(drop=True)
    return [tuple(plain(v) for v in row) for row in ordered.itertuples(index=False)]


@pytest.fixture(scope="module")
def both(lake_settings: Settings, warehouse: PostgresSettings) -> tuple[dict, dict]:
    build(lake_settings)
    duck = {name: pd.read_parquet(lake_settings.marts / f"{name}.parquet") for name in MARTS}
    loaded = load_raw(lake_settings.lake, warehouse)
    assert loaded["events"] == len(pd.read_parquet(lake_settings.lake / "raw" / "events"))
    build(lake_settings, target="postgres", postgres=warehouse)
    return duck, postgres_marts(warehouse)


def test_targets_build_the_same_marts_row_for_row(both: tuple[dict, dict], lake_settings: Settings) -> None:
    duck, pg = both
    expected = expected_mart_rows(lake_settings.lake)
    for name, keys in MARTS.items():
        assert list(pg[name].columns) == list(duck[name].columns), name
        assert len(duck[name]) == expected[name], name
        assert normalised(pg[name], keys) == normalised(duck[name], keys), name
    texts = pg["item_texts"].set_index("item_id")
    assert texts.loc[999, "text"] == 'Say "hi", all | news | x,y, q"t, back\\slash | a\\b\nc'


def test_postgres_reload_and_incremental_rebuild_are_idempotent(
    both: tuple[dict, dict], lake_settings: Settings, warehouse: PostgresSettings
) -> None:
    _, before = both
    day = LAST - timedelta(days=1)
    interval = (utc(day.year, day.month, day.day), utc(LAST.year, LAST.month, LAST.day))
    load_raw(lake_settings.lake, warehouse, days=[day])
    load_raw(lake_settings.lake, warehouse)
    build(lake_settings, target="postgres", postgres=warehouse, interval=interval)
    build(lake_settings, target="postgres", postgres=warehouse)
    after = postgres_marts(warehouse)
    for name, keys in MARTS.items():
        assert normalised(after[name], keys) == normalised(before[name], keys), name


def test_a_partition_gone_from_the_lake_leaves_postgres_too(
    lake_settings: Settings, warehouse: PostgresSettings
) -> None:
    extra = LAST + timedelta(days=5)
    path = write_partition(lake_settings.lake, "items", extra, [item(7777, utc(extra.year, extra.month, extra.day, 3))])

    def loaded_item_ids() -> list[int]:
        with connect(warehouse) as conn, conn.cursor() as cur:
            cur.execute('select item_id from "raw"."items"')
            return [row[0] for row in cur.fetchall()]

    load_raw(lake_settings.lake, warehouse, tables=["items"])
    assert 7777 in loaded_item_ids()
    path.unlink()  # e.g. moved to quarantine by a gate
    path.parent.rmdir()
    rows = load_raw(lake_settings.lake, warehouse, tables=["items"])["items"]
    remaining = loaded_item_ids()
    in_lake = pd.read_parquet(lake_settings.lake / "raw" / "items")["item_id"]
    assert 7777 not in remaining and sorted(remaining) == sorted(in_lake.tolist()) and len(remaining) == rows
