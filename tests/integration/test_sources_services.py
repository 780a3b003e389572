"""The MySQL (MariaDB) and MongoDB source paths against real servers."""

from datetime import UTC, date
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from recsys.config import Settings
from recsys.ingest.extract import extract_all, extract_interval
from recsys.lake import day_interval
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site

pytestmark = pytest.mark.services
CFG = SimulationConfig(days=2, n_users=20, initial_items=30, new_items_per_day=5)


def test_mariadb_extraction_matches_sqlite(tmp_path: Path, mariadb_url: str) -> None:
    site = simulate(CFG)
    lite = Settings(home=tmp_path / "lite")
    maria = Settings(home=tmp_path / "maria", source_url=mariadb_url)
    write_site(lite, site)
    write_site(maria, site)
    start, end = day_interval(date(2026, 11, 2))
    for table in ("events", "items"):
        a = pq.read_table(extract_interval(lite, table, start, end).partition)
        b = pq.read_table(extract_interval(maria, table, start, end).partition)
        assert a.equals(b), table  # same rows, same order, same types: the sub-second timestamps survive
    assert a.num_rows == 5


def test_mongo_items_source(tmp_path: Path, mongo_url: str, mariadb_url: str) -> None:
    site = simulate(CFG)
    s = Settings(
        home=tmp_path,
        source_url=mariadb_url,
        items_source="mongo",
        mongo_url=mongo_url,
        mongo_db=f"t{tmp_path.name[-8:]}",
    )
    write_site(s, site)
    start, end = day_interval(date(2026, 11, 1))
    results = extract_all(s, start, end)
    items = pq.read_table(results["items"].partition).to_pylist()
    assert [i["item_id"] for i in items] == list(range(1, 31))
    first = site.items[0]
    assert items[0]["tags"] == first["tags"]
    assert items[0]["updated_at"] == first["updated_at"].replace(tzinfo=UTC)


def test_mariadb_schema_drift_reaches_the_lake_flagged(tmp_path: Path, mariadb_url: str) -> None:
    """On a strictly typed server the corruption needs real DDL: a VARCHAR value column and a renamed column."""
    import json

    from unit.sources.test_corruption import corrupted_lake

    settings = Settings(home=tmp_path, source_url=mariadb_url)
    site, manifest, raw = corrupted_lake(settings)
    assert raw["session_id"].isna().all()
    assert raw["_extra"].map(lambda x: "session_key" in json.loads(x)).all()
    quarantine = (settings.lake / "quarantine" / "events").rglob("*.jsonl")
    quarantined = {json.loads(line)["row"]["event_id"] for f in quarantine for line in f.read_text().splitlines()}
    assert quarantined == set(manifest.get("retyped_column").event_ids)
    assert len(raw) + len(quarantined) == len(site.events)


def test_events_logged_to_mongo(tmp_path: Path, mongo_url: str) -> None:
    site = simulate(CFG)
    s = Settings(home=tmp_path, events_source="mongo", mongo_url=mongo_url, mongo_db=f"ev{tmp_path.name[-8:]}")
    write_site(s, site)
    lite = Settings(home=tmp_path / "lite")
    write_site(lite, site)
    start, end = day_interval(date(2026, 11, 2))
    from_mongo = pq.read_table(extract_interval(s, "events", start, end).partition)
    from_sql = pq.read_table(extract_interval(lite, "events", start, end).partition)
    assert from_mongo.num_rows == from_sql.num_rows > 0
    assert from_mongo.equals(from_sql)  # same rows, order and types whichever store the site logs to
