"""The dbt project's tooling works (sqlfluff lint is clean, `dbt docs generate` and `dbt source freshness` run) and
the project keeps the dbt Labs layout: staging reads one source and only renames and casts, every model is documented
and keyed, and the feature and deduplication models have unit tests."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from conftest_raw import event, item, utc, write_partition
from recsys.config import Settings
from recsys.transform.dbt import _temporary_env, dbt_project_dir
from recsys.transform.lint import lint_sql

# one row per delivered raw row: an event re-delivered by two partitions is two rows; int_events_deduplicated keys it
KEYLESS_MODELS = {"stg_app__events"}
UNIT_TESTED_MODELS = {
    "int_events_deduplicated", "int_items_deduplicated",
    "int_engagement_daily", "int_engagement_rolling_28d",
    "user_daily_features", "item_daily_features", "interactions",
}  # fmt: skip


def dbt(settings: Settings, *args: str) -> object:
    from dbt.cli.main import dbtRunner

    work = settings.home / "dbt" / "tooling"
    base = ["--project-dir", str(dbt_project_dir()), "--profiles-dir", str(dbt_project_dir()),
            "--target-path", str(work / "target"), "--log-path", str(work / "logs")]  # fmt: skip
    with _temporary_env(settings.tool_env()):
        return dbtRunner().invoke([*args, *base])


@pytest.fixture
def lake(settings: Settings) -> Settings:
    day = date(2024, 5, 1)
    write_partition(settings.lake, "items", day, [item(10, utc(2024, 5, 1))])
    write_partition(settings.lake, "events", day, [event("e1", 1, 10, "click", utc(2024, 5, 1, 9))])
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    settings.marts.mkdir(parents=True, exist_ok=True)
    return settings


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The project's manifest from `dbt parse` (no warehouse needed)."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("RECSYS_")]:
            mp.delenv(key)
        settings = Settings(home=tmp_path_factory.mktemp("parse") / "home")
        outcome = dbt(settings, "parse")
        assert outcome.success  # type: ignore[attr-defined]
        yield json.loads((settings.home / "dbt" / "tooling" / "target" / "manifest.json").read_text())


def models_of(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["unique_id"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}


def test_layers_follow_the_dbt_structure_guide(manifest: dict[str, Any]) -> None:
    layers: dict[str, set[str]] = defaultdict(set)
    for node in models_of(manifest).values():
        name, layer, parents = node["name"], node["fqn"][1], node["depends_on"]["nodes"]
        layers[layer].add(name)
        assert node["description"].strip(), f"{name}: describe the model in its .yml"
        own_yml = Path(node["original_file_path"]).with_suffix(".yml").as_posix()
        assert node["patch_path"] == f"recsys://{own_yml}", f"{name}: document it in {own_yml}"
        if layer == "staging":
            assert len(parents) == 1 and parents[0].startswith("source."), f"{name}: staging reads one source table"
            code = node["raw_code"].lower()
            assert "row_number" not in code and " join " not in code, f"{name}: staging only renames, casts, cleans"
            assert node["config"]["materialized"] == "view"
        else:
            assert not any(p.startswith("source.") for p in parents), f"{name}: only staging reads sources"
    assert set(layers) == {"staging", "intermediate", "marts"}
    assert all(name.startswith("stg_") and "__" in name for name in layers["staging"])
    assert all(name.startswith("int_") for name in layers["intermediate"])
    assert {"int_events_deduplicated", "int_items_deduplicated"} <= layers["intermediate"]


def test_every_key_is_tested_unique_and_not_null(manifest: dict[str, Any]) -> None:
    keys: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    not_null: dict[str, set[str]] = defaultdict(set)
    for node in manifest["nodes"].values():
        test = (node.get("test_metadata") or {}).get("name")
        if test == "unique":
            keys[node["attached_node"]].append((node["column_name"],))
        elif test == "unique_combination_of_columns":
            keys[node["attached_node"]].append(tuple(node["test_metadata"]["kwargs"]["combination_of_columns"]))
        elif test == "not_null":
            not_null[node["attached_node"]].add(node["column_name"])
    for unique_id, node in models_of(manifest).items():
        if node["name"] in KEYLESS_MODELS:
            assert not keys[unique_id], node["name"]
            continue
        assert keys[unique_id], f"{node['name']}: test its primary key (unique or unique_combination_of_columns)"
        for key in keys[unique_id]:
            assert set(key) <= not_null[unique_id], f"{node['name']}: every key column is not_null too"


def test_feature_and_deduplication_models_have_unit_tests(manifest: dict[str, Any]) -> None:
    tested = {test["model"] for test in manifest["unit_tests"].values()}
    assert tested >= UNIT_TESTED_MODELS, UNIT_TESTED_MODELS - tested


def test_sqlfluff_lint_is_clean(settings: Settings) -> None:
    violations = lint_sql(settings)
    assert violations == [], "\n".join(f"{v['file']}:{v.get('start_line_no')} {v['code']} {v['description']}"
                                       for v in violations)  # fmt: skip


def test_docs_generate_writes_the_catalog(lake: Settings) -> None:
    outcome = dbt(lake, "docs", "generate")
    assert outcome.success  # type: ignore[attr-defined]
    target = lake.home / "dbt" / "tooling" / "target"
    assert (target / "index.html").is_file() and (target / "catalog.json").is_file()
    manifest = json.loads((target / "manifest.json").read_text())
    assert "model.recsys.int_events_deduplicated" in manifest["nodes"]
    assert manifest["sources"]["source.recsys.app.events"]["description"]


def test_source_freshness_reports_stale_sources(lake: Settings) -> None:
    outcome = dbt(lake, "source", "freshness")
    statuses = {r.node.name: str(r.status) for r in outcome.result.results}  # type: ignore[attr-defined]
    assert statuses == {"events": "error", "items": "error"}  # data from 2024 is stale
