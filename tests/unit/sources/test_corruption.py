"""Each injected corruption kind reaches the raw layer intact, and nothing is lost on the way."""

import json
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from recsys.config import Settings
from recsys.ingest.extract import backfill
from recsys.sources.corruption import KINDS, RENAMED, UNKNOWN_ITEM_BASE, inject
from recsys.sources.simulator import SimulationConfig, simulate
from recsys.sources.writer import write_site

CFG = SimulationConfig(days=4, n_users=30, initial_items=40, new_items_per_day=5)
DAY = date(2026, 11, 2)


def corrupted_lake(settings: Settings):
    site = simulate(CFG)
    manifest = inject(site, list(KINDS), DAY)
    write_site(settings, site, corruption=manifest)
    backfill(settings, CFG.start.date(), CFG.start.date() + timedelta(days=CFG.days - 1))
    raw = pd.concat(pd.read_parquet(p) for p in sorted((settings.lake / "raw" / "events").rglob("*.parquet")))
    return site, manifest, raw.set_index("event_id")


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory):
    settings = Settings(home=tmp_path_factory.mktemp("corrupt"))
    return (settings, *corrupted_lake(settings))


def rows(raw: pd.DataFrame, manifest, kind: str) -> pd.DataFrame:
    return raw.loc[manifest.get(kind).event_ids]


def test_manifest_records_every_kind(lake) -> None:
    settings, _, _, _ = lake
    saved = json.loads((settings.home / "simulation" / "corruption_manifest.json").read_text())
    assert {e["kind"] for e in saved["entries"]} == set(KINDS)


def test_null_ids_arrive_null(lake) -> None:
    _, _, manifest, raw = lake
    hit = rows(raw, manifest, "null_ids")
    assert (hit["user_id"].isna() | hit["item_id"].isna()).all()


def test_duplicates_arrive_as_separate_rows(lake) -> None:
    _, _, manifest, raw = lake
    copies = rows(raw, manifest, "duplicate_events")
    originals = raw.loc[[i.removesuffix("-dup") for i in copies.index]]
    cols = ["user_id", "item_id", "event_type", "occurred_at"]
    assert (copies[cols].to_numpy() == originals[cols].to_numpy()).all()


def test_odd_timestamps_arrive_unchanged(lake) -> None:
    _, _, manifest, raw = lake
    future = rows(raw, manifest, "future_timestamps")
    assert ((future["occurred_at"] - future["received_at"]) == pd.Timedelta(days=30)).all()
    old = rows(raw, manifest, "out_of_interval_timestamps")
    assert ((old["received_at"] - old["occurred_at"]) == pd.Timedelta(days=10)).all()


def test_unknown_items_arrive(lake) -> None:
    _, _, manifest, raw = lake
    assert (rows(raw, manifest, "unknown_items")["item_id"] >= UNKNOWN_ITEM_BASE).all()


def test_retyped_values_are_quarantined_with_reason(lake) -> None:
    settings, _, manifest, raw = lake
    ids = set(manifest.get("retyped_column").event_ids)
    assert not ids & set(raw.index)
    qfile = settings.lake / "quarantine" / "events" / f"dt={DAY}" / "rows.jsonl"
    entries = [json.loads(line) for line in qfile.read_text().splitlines()]
    assert {e["row"]["event_id"] for e in entries} == ids
    assert all("five stars" in e["reason"] or "float" in e["reason"].lower() for e in entries)


def test_empty_interval_is_an_empty_partition(lake) -> None:
    settings, _, manifest, _ = lake
    day = manifest.get("empty_interval").day
    assert pd.read_parquet(settings.lake / "raw" / "events" / f"dt={day}" / "part-0.parquet").empty


def test_renamed_column_travels_in_extra(lake) -> None:
    _, _, _, raw = lake
    old, new = RENAMED
    assert raw[old].isna().all()
    assert raw["_extra"].map(lambda x: new in json.loads(x)).all()


def test_nothing_is_lost(lake) -> None:
    settings, site, _, raw = lake
    quarantined = sum(1 for _ in (settings.lake / "quarantine" / "events").rglob("*.jsonl") for _ in _.open())
    assert len(raw) + quarantined == len(site.events)
    assert not raw.index.duplicated().any()


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown corruption kinds"):
        inject(simulate(CFG), ["gremlins"], DAY)


def test_replace_undoes_schema_drift(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    site = simulate(CFG)
    write_site(settings, site, corruption=inject(site, ["renamed_column"], DAY))
    write_site(settings, simulate(CFG), replace=True)
    backfill(settings, DAY, DAY)
    assert pd.read_parquet(settings.lake / "raw" / "events" / f"dt={DAY}").session_id.notna().all()


GATE_CATCHES = {
    "null_ids": "expect_column_values_to_not_be_null",
    "duplicate_events": "expect_compound_columns_to_be_unique",
    "future_timestamps": "expect_column_values_to_be_between(column=occurred_at)",
    "out_of_interval_timestamps": "expect_column_values_to_be_between(column=occurred_at)",
    "unknown_items": "expect_column_values_to_be_null(column=unknown_item_id)",
    "renamed_column": "expect_column_values_to_be_null(column=_extra)",
    "empty_interval": "expect_table_row_count_to_be_between",
    "retyped_column": "extracted_rows_quarantined_share",  # rows quarantined at extraction, above the share
}


@pytest.mark.parametrize("kind", sorted(GATE_CATCHES))
def test_the_raw_gate_flags_each_injected_kind(kind: str, tmp_path: Path) -> None:
    """The simulator's corruption, through the real writer and extractor, fails the raw events gate by name."""
    from recsys.lake import day_interval
    from recsys.validation.raw_events import gate_raw_events

    settings = Settings(home=tmp_path)
    site = simulate(CFG)
    manifest = inject(site, [kind], DAY)
    write_site(settings, site, corruption=manifest)
    backfill(settings, CFG.start.date(), CFG.start.date() + timedelta(days=CFG.days - 1))
    day = date.fromisoformat(manifest.get(kind).day or str(DAY))
    gate = gate_raw_events(settings, *day_interval(day))
    assert not gate.success
    assert GATE_CATCHES[kind] in gate.summary()
