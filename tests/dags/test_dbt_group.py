"""recsys_features' dbt task group (astronomer-cosmos): the tasks it renders, where it sits, how each task
invokes dbt, the manifest it is rendered from, and one day run through Airflow against ``dbt build``."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys import lake
from recsys.config import PostgresSettings, Settings, get_settings
from recsys.errors import TransformError
from recsys.orchestration.dbt import GROUP_ID, configure_invocation
from recsys.pipeline import dbt_finish_stage, dbt_prepare_stage
from recsys.transform.dbt import build, invocation_env, parse_manifest
from recsys.transform.dbt_project import FINGERPRINT, MANIFEST, current_manifest, manifest_dir, project_fingerprint

DAGS = Path(__file__).resolve().parents[2] / "dags"
MODELS = [
    "stg_app__events", "stg_catalog__items", "int_events_deduplicated", "int_items_deduplicated",
    "int_engagement_daily", "int_engagement_rolling_28d",
    "interactions", "item_daily_features", "item_texts", "user_daily_features", "user_recent_items",
]  # fmt: skip
SOURCE_TESTS = ["app_events_source_test", "catalog_items_source_test"]  # the raw sources' not_null tests
TWO_MODEL_TESTS = [  # tests reading two models: each runs once both are built
    "assert_recent_items_are_point_in_time_test",
    "relationships_interactions_item_id__item_id__ref_stg_catalog__items__test",
    "relationships_item_daily_features_item_id__item_id__ref_int_items_deduplicated__test",
]
MARTS = ["interactions", "item_daily_features", "item_texts", "user_daily_features", "user_recent_items"]
# a day through the DAG: its task states, its settings, its marts, and the marts `build` makes of the same lake
OneDay = tuple[dict[str, str], Settings, dict[str, pd.DataFrame], dict[str, pd.DataFrame]]
OUTSIDE_DBT = ["validate_raw", "validate_marts", "encode_items", "materialize", "check_freshness"]


def _dagbag(home: Path, airflow_home: Path, **env: str) -> object:
    """Parse the dags folder with RECSYS_HOME=home (and more RECSYS_* env), as the DAG processor would."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_HOME", str(airflow_home))
        mp.setenv("RECSYS_HOME", str(home))
        for key, value in env.items():
            mp.setenv(key, value)
        get_settings.cache_clear()
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=str(DAGS))
    get_settings.cache_clear()
    return bag


@pytest.fixture(scope="module")
def parsed_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A settings home holding the parsed dbt manifest (``recsys dbt parse``)."""
    home = tmp_path_factory.mktemp("dbt_group") / "home"
    parse_manifest(Settings(home=home))
    return home


@pytest.fixture(scope="module")
def dag(parsed_home: Path, tmp_path_factory: pytest.TempPathFactory) -> object:
    bag = _dagbag(parsed_home, tmp_path_factory.mktemp("airflow"))
    assert bag.import_errors == {}
    return bag.dags["recsys_features"]


def _group_tasks(dag: object) -> dict[str, object]:
    prefix = f"{GROUP_ID}."
    return {t.task_id.removeprefix(prefix): t for t in dag.tasks if t.task_id.startswith(prefix)}


def test_group_renders_a_run_and_a_test_task_per_model(dag: object) -> None:
    expected = {f"{m}.{kind}" for m in MODELS for kind in ("run", "test")} | set(SOURCE_TESTS) | set(TWO_MODEL_TESTS)
    assert set(_group_tasks(dag)) == expected
    assert dag.get_task("dbt.stg_app__events.run").select == "fqn:recsys.staging.stg_app__events"
    assert dag.get_task("dbt.app_events_source_test").select == "source:app.events"


def test_each_model_runs_after_its_parents_tests_and_before_its_own(dag: object) -> None:
    def upstream(task_id: str) -> set[str]:
        return dag.get_task(f"dbt.{task_id}").upstream_task_ids

    for model in MODELS:
        assert upstream(f"{model}.test") == {f"dbt.{model}.run"}
    assert upstream("stg_app__events.run") == {"dbt.app_events_source_test"}
    assert upstream("int_events_deduplicated.run") == {"dbt.stg_app__events.test"}
    assert upstream("user_recent_items.run") == {"dbt.interactions.test"}
    assert upstream("assert_recent_items_are_point_in_time_test") == {
        "dbt.interactions.test",
        "dbt.user_recent_items.test",
    }
    # a test of two models runs once, in its own task, not in either model's test task (which excludes it)
    assert "assert_recent_items_are_point_in_time" in dag.get_task("dbt.interactions.test").exclude


def test_group_sits_between_validate_raw_and_validate_marts(dag: object) -> None:
    group = {f"{GROUP_ID}.{name}" for name in _group_tasks(dag)}
    assert dag.get_task("validate_raw").downstream_task_ids == {"dbt_prepare"}
    assert dag.get_task("dbt_prepare").downstream_task_ids == {f"dbt.{t}" for t in SOURCE_TESTS}
    assert dag.get_task("dbt_finish").upstream_task_ids <= group
    assert dag.get_task("validate_marts").upstream_task_ids == {"dbt_finish"}
    before = dag.get_task("validate_raw").get_flat_relative_ids(upstream=False)
    after = dag.get_task("validate_marts").get_flat_relative_ids(upstream=True)
    assert group <= before & after


def test_group_tasks_use_the_dbt_pool_and_the_configured_target(dag: object, parsed_home: Path, tmp_path: Path) -> None:
    assert {t.pool for t in _group_tasks(dag).values()} == {Settings().orchestration.dbt_pool}
    assert {t.profile_config.target_name for t in _group_tasks(dag).values()} == {"duckdb"}
    postgres = _dagbag(parsed_home, tmp_path, RECSYS_WAREHOUSE__TARGET="postgres").dags["recsys_features"]
    assert {t.profile_config.target_name for t in _group_tasks(postgres).values()} == {"postgres"}


def test_a_missing_manifest_is_an_import_error_that_says_what_to_run(tmp_path: Path) -> None:
    bag = _dagbag(tmp_path / "home", tmp_path / "airflow")
    assert "recsys_features" not in bag.dags
    (error,) = [e for path, e in bag.import_errors.items() if path.endswith("recsys_features.py")]
    assert "No parsed dbt manifest" in error and "recsys dbt parse" in error


def test_a_manifest_parsed_from_other_files_is_refused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    folder = manifest_dir(settings)
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text('{"nodes": {}}')
    (folder / FINGERPRINT).write_text(project_fingerprint() + "\n")
    assert current_manifest(settings) == folder / MANIFEST
    (folder / FINGERPRINT).write_text("0" * 64 + "\n")  # as if a model changed after the parse
    with pytest.raises(TransformError, match=r"other project files.*recsys dbt parse"):
        current_manifest(settings)


def test_ensure_manifest_parses_only_a_missing_or_stale_manifest(
    parsed_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recsys.transform.dbt as transform_dbt

    parses: list[Path] = []
    monkeypatch.setattr(transform_dbt, "parse_manifest", lambda s: parses.append(s.home) or manifest_dir(s) / MANIFEST)
    current = Settings(home=parsed_home)
    assert transform_dbt.ensure_manifest(current) == manifest_dir(current) / MANIFEST
    assert parses == []
    transform_dbt.ensure_manifest(Settings(home=tmp_path / "home"))
    assert parses == [tmp_path / "home"]


@pytest.mark.parametrize("target", ["duckdb", "postgres"])
def test_each_task_invokes_dbt_with_the_runs_day_and_the_settings(
    target: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RECSYS_RECENT_ITEMS_LIMIT", "7")
    monkeypatch.setenv("RECSYS_WAREHOUSE__TARGET", target)
    settings = get_settings()
    operator = SimpleNamespace(env={"KEPT": "1"}, vars=None)
    try:
        configure_invocation({"dag_run": SimpleNamespace(partition_key="2026-11-03", conf={})}, operator)
    finally:
        gc.unfreeze()
    expected_vars = {
        "recent_items_limit": "7",
        "interval_start": "2026-11-03T00:00:00+00:00",
        "interval_end": "2026-11-04T00:00:00+00:00",
    }
    if target == "postgres":
        expected_vars["raw_schema"] = settings.warehouse.postgres.raw_schema
    assert operator.vars == expected_vars
    assert operator.env == {"KEPT": "1", **invocation_env(settings, target)}
    assert operator.env["RECSYS_LAKE_DIR"] == str(settings.lake)
    assert ("RECSYS_PG_HOST" in operator.env) is (target == "postgres")


def test_prepare_refuses_an_incomplete_lake(settings: Settings) -> None:
    start, end = lake.day_interval(date(2026, 11, 3))
    with pytest.raises(TransformError, match="no partition for events, items"):
        dbt_prepare_stage(settings, start, end)


def test_finish_empties_the_marts_dbt_duckdb_wrote_as_one_null_row(settings: Settings) -> None:
    folder = manifest_dir(settings)
    folder.mkdir(parents=True)
    nodes = {f"model.recsys.{m}": {"name": m, "resource_type": "model"} for m in ("user_recent_items", "item_texts")}
    (folder / MANIFEST).write_text(json.dumps({"nodes": nodes}))
    (folder / FINGERPRINT).write_text(project_fingerprint() + "\n")
    settings.marts.mkdir(parents=True)
    schema = pa.schema([("user_id", pa.int64()), ("recent_item_ids", pa.list_(pa.int64()))])
    pq.write_table(pa.table({"user_id": [None], "recent_item_ids": [None]}, schema=schema),
                   settings.marts / "user_recent_items.parquet")  # fmt: skip
    pq.write_table(pa.table({"item_id": [1], "text": [None]}), settings.marts / "item_texts.parquet")

    summary = dbt_finish_stage(settings, *lake.day_interval(date(2026, 11, 3)))

    assert summary == {"target": "duckdb", "emptied_marts": ["user_recent_items"]}
    emptied = pq.read_table(settings.marts / "user_recent_items.parquet")
    assert emptied.num_rows == 0 and emptied.schema.equals(schema)
    assert pq.read_table(settings.marts / "item_texts.parquet").num_rows == 1


# --- one day through Airflow (`airflow dags test`, tasks outside dbt marked done) against `dbt build` ---------


def _airflow(args: list[str], env: dict[str, str], log: Path) -> None:
    with log.open("w") as out:
        code = subprocess.run(
            [str(Path(sys.executable).with_name("airflow")), *args], env=env, stdout=out, stderr=subprocess.STDOUT
        ).returncode
    assert code == 0, f"airflow {' '.join(args)} failed; see {log}"


def _run_dbt_part(settings: Settings, day: date, env: dict[str, str]) -> dict[str, str]:
    """recsys_features' dbt tasks for ``day`` (extract and the other tasks marked done); the run's task states."""
    airflow_home = settings.home / "airflow"
    airflow_home.mkdir(parents=True)
    env = {
        **os.environ,
        **settings.tool_env(),
        **env,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
    }
    _airflow(["db", "migrate"], env, settings.home / "migrate.log")
    done = "^(" + "|".join(["extract", *OUTSIDE_DBT]) + ")$"
    conf = json.dumps({"day": day.isoformat()})
    args = ["dags", "test", "recsys_features", "-c", conf, "--mark-success-pattern", done]
    _airflow(args, env, settings.home / "dag.log")
    with sqlite3.connect(airflow_home / "airflow.db") as db:
        return dict(db.execute("select task_id, state from task_instance where dag_id = 'recsys_features'"))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(list(frame.columns[:3])).reset_index(drop=True)


def _parquet_marts(settings: Settings) -> dict[str, pd.DataFrame]:
    return {name: _sorted(pd.read_parquet(settings.marts / f"{name}.parquet")) for name in MARTS}


def _postgres_marts(pg: PostgresSettings) -> dict[str, pd.DataFrame]:
    from recsys.transform.postgres import connect

    frames = {}
    with connect(pg) as conn, conn.cursor() as cur:
        for name in MARTS:
            cur.execute(f'select * from "{pg.schema_name}"."{name}"')
            frames[name] = _sorted(pd.DataFrame(cur.fetchall(), columns=[c.name for c in cur.description]))
    return frames


@contextmanager
def _tiny_site(tmp: Path) -> Iterator[tuple[Settings, date]]:
    """A tiny simulated site extracted for two days into ``tmp/lake``, with the parsed manifest; day 2."""
    from recsys.ingest.extract import backfill
    from recsys.sources.simulator import SimulationConfig, simulate
    from recsys.sources.writer import write_site

    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("RECSYS_")]:
            mp.delenv(key)
        cfg = SimulationConfig(days=2, n_users=25, initial_items=30, new_items_per_day=4)
        settings = Settings(home=tmp / "airflow_home", lake_dir=tmp / "lake")
        write_site(settings, simulate(cfg))
        day1 = cfg.start.date()
        backfill(settings, day1, day1 + timedelta(days=1))
        parse_manifest(settings)
        yield settings, day1 + timedelta(days=1)


@pytest.fixture(scope="module")
def on_duckdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OneDay]:
    """Day 2 through the DAG's dbt part, and through ``build`` in a second home reading the same lake."""
    tmp = tmp_path_factory.mktemp("dbt_day")
    with _tiny_site(tmp) as (settings, day):
        states = _run_dbt_part(settings, day, {})
        via_build = Settings(home=tmp / "build_home", lake_dir=settings.lake)
        build(via_build, target="duckdb", interval=lake.day_interval(day))
        yield states, settings, _parquet_marts(settings), _parquet_marts(via_build)


@pytest.fixture(scope="module")
def on_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OneDay]:
    """The same on the PostgreSQL target: the DAG in one fresh database, ``sync_raw`` + ``build`` in another."""
    from recsys.transform.postgres import sync_raw
    from servers import fresh_postgres_database

    tmp = tmp_path_factory.mktemp("dbt_day_pg")
    with (
        fresh_postgres_database("recsys_dag") as dag_db,
        fresh_postgres_database("recsys_build") as build_db,
        _tiny_site(tmp) as (settings, day),
    ):
        env = {"RECSYS_WAREHOUSE__TARGET": "postgres", "RECSYS_WAREHOUSE__POSTGRES__DBNAME": dag_db}
        states = _run_dbt_part(settings, day, env)
        via_build = PostgresSettings(dbname=build_db)
        sync_raw(settings.lake, via_build)
        build(settings, target="postgres", postgres=via_build, interval=lake.day_interval(day))
        yield states, settings, _postgres_marts(PostgresSettings(dbname=dag_db)), _postgres_marts(via_build)


def _check_every_dbt_task_succeeded(one_day: OneDay) -> None:
    states, settings, _, _ = one_day
    dbt_tasks = {t: s for t, s in states.items() if t.startswith((f"{GROUP_ID}.", "dbt_"))}
    assert len(dbt_tasks) == 2 * len(MODELS) + len(SOURCE_TESTS) + len(TWO_MODEL_TESTS) + 2
    assert set(dbt_tasks.values()) == {"success"}, {t: s for t, s in dbt_tasks.items() if s != "success"}
    stages = [json.loads(line)["stage"] for line in (settings.home / "timings.jsonl").read_text().splitlines()]
    assert stages == ["dbt_prepare", "dbt_finish"]


def _check_marts_equal(one_day: OneDay) -> None:
    _, _, got, want = one_day
    assert {m: len(f) for m, f in got.items()} == {m: len(f) for m, f in want.items()}
    assert all(len(f) > 0 for f in want.values())
    for name in MARTS:
        pd.testing.assert_frame_equal(got[name], want[name], obj=name)


@pytest.mark.slow
def test_one_day_through_the_dag_builds_every_model_and_test(on_duckdb: OneDay) -> None:
    _check_every_dbt_task_succeeded(on_duckdb)


@pytest.mark.slow
def test_one_day_through_the_dag_equals_dbt_build(on_duckdb: OneDay) -> None:
    _check_marts_equal(on_duckdb)


@pytest.mark.slow
@pytest.mark.services
def test_one_day_through_the_dag_on_postgres_equals_dbt_build(on_postgres: OneDay) -> None:
    _check_every_dbt_task_succeeded(on_postgres)
    _check_marts_equal(on_postgres)
