"""The dbt project's tooling works: sqlfluff lint is clean, `dbt docs generate` and `dbt source freshness` run."""

from __future__ import annotations

import json
from datetime import date

import pytest

from conftest_raw import event, item, user, utc, write_partition
from recsys.config import Settings
from recsys.transform.dbt import _temporary_env, dbt_project_dir
from recsys.transform.lint import lint_sql


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
    write_partition(settings.lake, "users", day, [user(1, utc(2024, 5, 1))])
    write_partition(settings.lake, "events", day, [event("e1", 1, 10, "click", utc(2024, 5, 1, 9))])
    settings.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    settings.marts.mkdir(parents=True, exist_ok=True)
    return settings


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
    assert statuses == {"events": "error", "users": "error", "items": "error"}  # data from 2024 is stale
