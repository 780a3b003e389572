"""`recsys status` via CliRunner: freshness per view, the production bento, the DAGs' last runs, gate decisions.

One home per module: the example user rows materialized until 2024-01-08 (the item views never), a real bento
built and deployed, two gate decisions, and an Airflow metadata database with dag_run rows. That database is
created in a subprocess from Airflow's own table definition (``DagRun.__table__``, the model ``airflow db
migrate`` builds the table from) and its rows inserted through it, so the reader meets Airflow's column types and
date encoding; it takes ~4 s where the full migration takes ~20 s, and keeps Airflow's import out of the tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from recsys import cli
from recsys.config import Settings
from recsys.orchestration.runs import DAG_IDS, last_runs, metadata_url
from recsys.registry.gate import decide
from recsys.registry.production import deploy
from recsys.registry.store import build_bento, save_model
from recsys.serving.testing import materialize_example_users, write_example_artifact

# Feast's DuckDB offline store goes through ibis, which calls a deprecated duckdb method.
pytestmark = pytest.mark.filterwarnings("ignore:fetch_arrow_table:DeprecationWarning")

runner = CliRunner()
AS_OF = "2024-01-09"  # one day after the user rows' materialization end
RUNS = [  # (dag_id, run_id, state, run_type, partition_key, data interval, start, end), oldest first
    ("recsys_features", "scheduled__2024-01-06", "success", "scheduled", "2024-01-06", None,
     "2024-01-07T00:05:00", "2024-01-07T00:20:00"),
    ("recsys_training", "manual__2024-01-01", "success", "manual", None, ("2024-01-01", "2024-01-08"),
     "2024-01-08T01:00:00", "2024-01-08T01:30:00"),
    ("recsys_features", "scheduled__2024-01-07", "failed", "scheduled", "2024-01-07", None,
     "2024-01-08T00:05:00", "2024-01-08T00:09:00"),
    ("recsys_daily", "manual__2023-12-01", "success", "manual", None, None, "2023-12-02T00:00:00", None),
]  # fmt: skip
DAG_RUN_DB = """
import json, sys
from datetime import UTC, datetime
from sqlalchemy import create_engine
from airflow.models.dagrun import DagRun

def ts(value):
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)

engine = create_engine(f"sqlite:///{sys.argv[1]}")
DagRun.__table__.create(engine)
with engine.begin() as conn:
    for dag_id, run_id, state, run_type, key, interval, start, end in json.loads(sys.argv[2]):
        lo, hi = interval or (None, None)
        conn.execute(DagRun.__table__.insert().values(
            dag_id=dag_id, run_id=run_id, state=state, run_type=run_type, partition_key=key,
            data_interval_start=ts(lo), data_interval_end=ts(hi), start_date=ts(start), end_date=ts(end),
            run_after=ts(start), log_template_id=None, clear_number=0,
        ))
"""


@dataclass(frozen=True)
class Home:
    path: Path
    model: str
    bento: str

    @property
    def settings(self) -> Settings:
        return Settings(home=self.path)


def write_dag_runs(database: Path, airflow_home: Path) -> None:
    """An Airflow metadata SQLite database at ``database`` holding RUNS in Airflow's dag_run table."""
    database.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", DAG_RUN_DB, str(database), json.dumps(RUNS)],
        env={"AIRFLOW_HOME": str(airflow_home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Home:
    root = tmp_path_factory.mktemp("cli_status")
    settings = Settings(home=root / "home")
    materialize_example_users(settings, {101: ([40.0, 6.0, 0.14], [1003, 1005])})  # until 2024-01-08
    artifact = write_example_artifact(root / "artifact")
    metadata = {
        "metrics": {"model": {"ndcg@10": 0.21}, "popularity": {"ndcg@10": 0.1}},
        "data_interval_start": "2024-01-01T00:00:00+00:00",
        "data_interval_end": "2024-01-08T00:00:00+00:00",
    }
    model = save_model(settings, artifact.directory, metadata)
    bento = build_bento(settings, model)
    deploy(settings, bento, reason="first deploy")
    first = decide(model, 0.21, None, None, "ndcg@10", 0.0)
    refused = decide("recommender_model:candidate2", 0.19, model, 0.21, "ndcg@10", 0.0)
    registry = settings.home / "registry"  # recsys.registry.gate's decisions file
    (registry / "decisions.jsonl").write_text("".join(json.dumps(asdict(d)) + "\n" for d in (first, refused)))
    write_dag_runs(settings.home / "airflow" / "airflow.db", root / "airflow_home")
    return Home(settings.home, model, bento)


@pytest.fixture
def home(built: Home, monkeypatch: pytest.MonkeyPatch) -> Home:
    monkeypatch.setenv("RECSYS_HOME", str(built.path))
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)  # the embedded mode's database
    return built


def _section(output: str, title: str) -> list[str]:
    """The lines under the heading that starts with ``title``, up to the next blank line."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def test_status_prints_a_table_per_section_and_exits_0_though_views_are_stale(home: Home) -> None:
    result = runner.invoke(cli.app, ["status", "--as-of", AS_OF])

    assert result.exit_code == 0, result.output
    assert result.output.startswith("Feature freshness at 2024-01-09T00:00:00+00:00\n")
    assert [line.split() for line in _section(result.output, "Feature freshness")] == [
        ["VIEW", "MATERIALIZED", "UNTIL", "AGE", "SLA", "STATUS"],
        ["user_stats", "2024-01-08T00:00:00+00:00", "1", "day,", "0:00:00", "2", "days,", "0:00:00", "fresh"],
        ["item_stats", "never", "-", "2", "days,", "0:00:00", "STALE"],
        ["user_recent_items", "2024-01-08T00:00:00+00:00", "1", "day,", "0:00:00", "2", "days,", "0:00:00", "fresh"],
        ["item_text_embedding", "never", "-", "8", "days,", "0:00:00", "STALE"],
    ]
    header, production = _section(result.output, "Production")
    assert header.split() == ["BENTO", "MODEL", "METRICS", "DATA", "INTERVAL", "DEPLOYED", "REASON"]
    assert production.split()[:7] == [home.bento, home.model, "ndcg@10", "0.2100", "(pop", "0.1000)",
                                      "2024-01-01..2024-01-08"]  # fmt: skip
    assert production.endswith("first deploy")
    assert [line.split() for line in _section(result.output, "Last DAG runs")] == [
        ["DAG", "OUTCOME", "RUN", "PARTITION", "STARTED", "ENDED"],
        ["recsys_features", "failed", "scheduled__2024-01-07", "2024-01-07", "2024-01-08", "00:05:00",
         "2024-01-08", "00:09:00"],
        ["recsys_training", "success", "manual__2024-01-01", "2024-01-01", "2024-01-08", "01:00:00",
         "2024-01-08", "01:30:00"],
    ]  # fmt: skip
    header, newest, oldest = _section(result.output, "Promotion gate decisions")
    assert header.split() == ["DECIDED", "CANDIDATE", "OUTCOME", "REASON"]
    assert newest.split()[2:5] == ["recommender_model:candidate2", "refused", "ndcg@10"]
    assert oldest.split()[2:4] == [home.model, "promoted"]
    assert "no production model yet" in oldest


def test_status_json_holds_the_same_facts_for_machines(home: Home) -> None:
    result = runner.invoke(cli.app, ["status", "--as-of", AS_OF, "--json"])

    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["as_of"] == "2024-01-09T00:00:00+00:00"
    assert {v["view"]: (v["age_s"], v["sla_s"], v["fresh"]) for v in status["freshness"]["views"]} == {
        "user_stats": (86400.0, 172800.0, True),
        "item_stats": (None, 172800.0, False),
        "user_recent_items": (86400.0, 172800.0, True),
        "item_text_embedding": (None, 691200.0, False),
    }
    production = status["production"]
    assert (production["bento"], production["model"], production["reason"]) == (home.bento, home.model, "first deploy")
    assert production["metrics"]["model"] == {"ndcg@10": 0.21}
    assert production["data_interval_end"] == "2024-01-08T00:00:00+00:00"
    assert status["dag_runs"]["recsys_features"] == {
        "dag_id": "recsys_features",
        "run_id": "scheduled__2024-01-07",
        "state": "failed",
        "run_type": "scheduled",
        "partition_key": "2024-01-07",
        "data_interval_start": None,
        "data_interval_end": None,
        "start_date": "2024-01-08T00:05:00+00:00",
        "end_date": "2024-01-08T00:09:00+00:00",
    }
    training = status["dag_runs"]["recsys_training"]
    assert (training["state"], training["data_interval_start"]) == ("success", "2024-01-01T00:00:00+00:00")
    assert [(d["candidate"], d["promoted"]) for d in status["gate_decisions"]] == [
        ("recommender_model:candidate2", False),
        (home.model, True),
    ]


def test_status_of_a_fresh_home_says_nothing_has_run_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)

    result = runner.invoke(cli.app, ["status"])

    assert result.exit_code == 0, result.output
    assert "no Feast registry at" in result.output and "recsys run --day" in result.output
    assert _section(result.output, "Production") == ["  no production bento yet"]
    assert [line.split() for line in _section(result.output, "Last DAG runs")][1:] == [
        ["recsys_features", "no", "runs", "yet"],
        ["recsys_training", "no", "runs", "yet"],
    ]
    assert _section(result.output, "Promotion gate decisions") == ["  no decisions yet"]
    assert not (tmp_path / "home").exists()  # a report: it creates nothing


def test_runs_of_a_database_without_a_dag_run_table_are_none_and_a_missing_one_stays_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)
    settings = Settings(home=tmp_path / "home")
    database = settings.home / "airflow" / "airflow.db"
    assert metadata_url(settings) == f"sqlite:///{database}"

    assert last_runs(settings) == dict.fromkeys(DAG_IDS)
    assert not database.exists()

    database.parent.mkdir(parents=True)
    sqlite3.connect(database).close()  # an empty database: Airflow has not migrated it yet
    assert last_runs(settings) == dict.fromkeys(DAG_IDS)
