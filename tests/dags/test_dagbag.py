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
def dagbag(tmp_path_factory: pytest.TempPathFactory):
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
    from airflow.dag_processing.dagbag import DagBag

    yield DagBag(dag_folder=str(DAGS))
    mp.undo()


def test_no_import_errors(dagbag) -> None:
    assert dagbag.import_errors == {}
    assert "recsys_daily" in dagbag.dags


def test_every_dag_has_tags_retries_and_docs(dagbag) -> None:
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md, dag_id
        for t in dag.tasks:
            assert t.retries is not None, (dag_id, t.task_id)


def test_daily_dag_has_a_data_interval_timetable_and_the_whole_flow(dagbag) -> None:
    dag = dagbag.dags["recsys_daily"]
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    order = ["extract", "validate_raw", "dbt_build", "validate_marts", "materialize", "encode_items", "train"]
    order += ["evaluate", "register"]
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    assert "promote" in dag.get_task("register").downstream_task_ids
    assert "build_bento" in dag.get_task("promote").downstream_task_ids


def test_dag_files_parse_fast_without_heavy_imports(tmp_path: Path) -> None:
    probe = textwrap.dedent(f"""
        import os, sys, time
        os.environ["AIRFLOW_HOME"] = {str(tmp_path)!r}
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
