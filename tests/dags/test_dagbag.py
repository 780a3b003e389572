"""DagBag: DAG files import cleanly, fast, without heavy libraries, and follow the project's conventions."""

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"
HEAVY = ["tensorflow", "keras", "keras_hub", "feast", "great_expectations", "bentoml", "dbt", "pandas", "transformers"]


@pytest.fixture(scope="module")
def parsed_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A settings home with the parsed dbt manifest the features DAG's dbt group is rendered from."""
    from recsys.config import Settings
    from recsys.transform.dbt import parse_manifest

    home = tmp_path_factory.mktemp("dagbag") / "home"
    parse_manifest(Settings(home=home))
    return home


@pytest.fixture
def dagbag(parsed_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv("RECSYS_HOME", str(parsed_home))
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert set(dagbag.dags) == {"recsys_features", "recsys_training"}


def test_every_dag_has_tags_retries_and_docs(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md, dag_id
        for t in dag.tasks:
            assert t.retries is not None, (dag_id, t.task_id)


def test_retries_default_per_dag_and_follow_the_settings(dagbag, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    assert dagbag.dags["recsys_features"].get_task("materialize").retries == 2
    assert dagbag.dags["recsys_training"].get_task("train").retries == 1
    assert dagbag.dags["recsys_features"].get_task("validate_raw").retries == 0  # a gate's refusal is final
    from recsys.config import get_settings

    monkeypatch.setenv("RECSYS_ORCHESTRATION__RETRIES", "0")  # what one-shot `airflow dags test` runs get
    get_settings.cache_clear()
    no_retries = DagBag(dag_folder=str(DAGS))
    assert {t.retries for dag in no_retries.dags.values() for t in dag.tasks} == {0}


def _assert_chain(dag, order: list[str]) -> None:
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)


def test_features_is_a_daily_partitioned_dag_with_catchup_ending_in_the_features_asset(dagbag) -> None:
    dag = dagbag.dags["recsys_features"]
    timetable = dag.timetable
    assert type(timetable).__name__ == "CronPartitionTimetable" and dag.catchup is True
    assert (timetable.expression, timetable.run_offset, timetable.key_format) == ("0 0 * * *", -1, "%Y-%m-%d")
    gates = ["extract", "validate_raw", "dbt_prepare"]
    after = ["dbt_finish", "validate_marts", "encode_items", "materialize", "check_freshness"]
    _assert_chain(dag, gates)
    _assert_chain(dag, after)
    assert [o.name for o in dag.get_task("check_freshness").outlets] == ["recsys_features"]
    assert {t.task_id for t in dag.tasks if t.retries == 0} >= {"validate_raw", "validate_marts", "check_freshness"}


def test_training_rolls_seven_feature_days_up_into_a_week(dagbag) -> None:
    dag = dagbag.dags["recsys_training"]
    timetable = dag.timetable
    assert type(timetable).__name__ == "PartitionedAssetTimetable"
    mapper = timetable.default_partition_mapper
    assert type(mapper).__name__ == "RollupMapper"
    assert (type(mapper.window).__name__, type(mapper.wait_policy).__name__) == ("WeekWindow", "WaitForAll")
    assert timetable.asset_condition.name == "recsys_features"
    _assert_chain(dag, ["training_set", "train", "evaluate", "register", "promote", "build_bento"])
    _assert_chain(dag, ["build_bento", "infra_validate", "deploy"])
    assert dag.get_task("train").pool == "default_pool"  # orchestration.train_pool


def test_the_train_task_takes_its_pool_and_queue_from_the_settings(tmp_path: Path, parsed_home: Path) -> None:
    probe = textwrap.dedent(f"""
        import os
        os.environ["AIRFLOW_HOME"] = {str(tmp_path)!r}
        os.environ["RECSYS_HOME"] = {str(parsed_home)!r}
        os.environ["RECSYS_ORCHESTRATION__TRAIN_POOL"] = "gpu"
        os.environ["RECSYS_ORCHESTRATION__TRAIN_QUEUE"] = "gpu-workers"
        from airflow.dag_processing.dagbag import DagBag
        task = DagBag(dag_folder={str(DAGS)!r}).dags["recsys_training"].get_task("train")
        print(task.pool, task.queue)
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "gpu gpu-workers"


def test_dbt_can_run_as_one_build_task(tmp_path: Path, parsed_home: Path) -> None:
    probe = textwrap.dedent(f"""
        import os
        os.environ["AIRFLOW_HOME"] = {str(tmp_path)!r}
        os.environ["RECSYS_HOME"] = {str(parsed_home)!r}
        os.environ["RECSYS_ORCHESTRATION__DBT_TASKS"] = "single"
        from airflow.dag_processing.dagbag import DagBag
        dag = DagBag(dag_folder={str(DAGS)!r}).dags["recsys_features"]
        build = dag.get_task("dbt_build")
        print(sorted(build.upstream_task_ids), sorted(build.downstream_task_ids), build.pool,
              any(t.task_id.startswith("dbt.") for t in dag.tasks))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "['validate_raw'] ['validate_marts'] recsys_dbt False"


def test_dag_files_parse_fast_without_heavy_imports(tmp_path: Path, parsed_home: Path) -> None:
    probe = textwrap.dedent(f"""
        import os, sys, time
        os.environ["AIRFLOW_HOME"] = {str(tmp_path)!r}
        os.environ["RECSYS_HOME"] = {str(parsed_home)!r}
        from airflow.dag_processing.dagbag import DagBag
        before = set(sys.modules)
        t = time.perf_counter()
        bag = DagBag(dag_folder={str(DAGS)!r})
        elapsed = time.perf_counter() - t
        new = set(sys.modules) - before
        heavy = sorted(m for m in new if m.split(".")[0] in {HEAVY!r})
        print(json.dumps({{"elapsed": elapsed, "heavy": heavy, "errors": len(bag.import_errors)}}))
    """)
    out = subprocess.run([sys.executable, "-c", "import json\n" + probe], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], f"DAG files imported heavy modules: {result['heavy']}"
    assert result["errors"] == 0
    assert result["elapsed"] < 2.0, f"DAG parsing took {result['elapsed']:.2f} s"
