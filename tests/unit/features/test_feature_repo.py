"""The feature repo imports without the recsys environment, serves the `feast` CLI and the library, and the
library binds its sources to the configured warehouse without touching the process state."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from recsys.config import Settings, project_dir
from recsys.features import PROJECT, definitions
from recsys.features.store import REPO_MODULE, _repo_module

REPO = project_dir() / "feature_repo"
VIEW_SOURCES = {
    "user_stats": "user_daily_features",
    "item_stats": "item_daily_features",
    "user_recent_items": "user_recent_items",
    "item_text_embedding": "item_text_embedding",
}


def _clean_env() -> dict[str, str]:
    """The current environment without any RECSYS_* or FEAST_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "FEAST_"))}


def _views(objects: list[object]) -> dict[str, object]:
    from feast import FeatureView

    return {obj.name: obj for obj in objects if isinstance(obj, FeatureView)}  # type: ignore[attr-defined]


@pytest.mark.parametrize("module", sorted(p.stem for p in REPO.glob("*.py")))
def test_every_repo_module_imports_without_the_recsys_environment(module: str, tmp_path: Path) -> None:
    """As the `feast` CLI imports it (a top-level module on sys.path), from another directory, no RECSYS_* set."""
    code = f"import sys; sys.path.insert(0, {str(REPO)!r}); import {module}"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


_AUDITED: list[tuple[str, tuple[object, ...]]] = []
_RECORDING: list[bool] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _RECORDING and event in {"import", "os.putenv", "os.unsetenv"}:
        _AUDITED.append((event, args))


def test_loading_definitions_leaves_environ_path_and_modules_as_they_were(tmp_path: Path) -> None:
    duck = Settings(home=tmp_path / "duck")
    pg = Settings(home=tmp_path / "pg", warehouse={"target": "postgres", "postgres": {"schema_name": "marts"}})
    definitions(duck), definitions(pg)  # the first loads import Feast's modules (and the repo file, once)
    loads = _repo_module.cache_info().misses
    environ, path, modules = dict(os.environ), list(sys.path), set(sys.modules)
    sys.addaudithook(_audit)  # hooks stay for the process: it records only while _RECORDING is set

    _RECORDING.append(True)
    try:
        first, second, third = definitions(duck), definitions(pg), definitions(duck)
    finally:
        _RECORDING.clear()

    assert _AUDITED == []  # no import and no environment write, not even one undone afterwards
    assert dict(os.environ) == environ
    assert sys.path == path
    assert set(sys.modules) == modules
    assert _repo_module.cache_info().misses == loads  # not re-executed
    assert not [m for m in sys.modules.values() if str(getattr(m, "__file__", None) or "").startswith(str(REPO))]
    assert all(a is not b for a, b in zip(first, third, strict=True))  # fresh objects per call
    assert len(first) == len(second) == 8


def test_file_sources_point_at_the_settings_paths(tmp_path: Path) -> None:
    from feast import FeatureService, FileSource

    settings = Settings(home=tmp_path / "home", warehouse={"marts_dir": tmp_path / "elsewhere" / "marts"})
    objects = definitions(settings)
    views = _views(objects)

    assert set(views) == set(VIEW_SOURCES)
    for view, source in VIEW_SOURCES.items():
        batch = views[view].batch_source  # type: ignore[attr-defined]
        assert isinstance(batch, FileSource) and batch.name == source
        expected = settings.embeddings_path if view == "item_text_embedding" else settings.marts / f"{source}.parquet"
        assert batch.path == str(expected)
    assert settings.marts == tmp_path / "elsewhere" / "marts"
    services = [o for o in objects if isinstance(o, FeatureService)]
    assert {p.batch_source.path for s in services for p in s.feature_view_projections} == {  # type: ignore[union-attr]
        views[v].batch_source.path  # type: ignore[attr-defined]
        for v in VIEW_SOURCES
    }


def test_postgres_sources_point_at_the_settings_schema(tmp_path: Path) -> None:
    from feast import FeatureService
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

    settings = Settings(home=tmp_path, warehouse={"target": "postgres", "postgres": {"schema_name": "analytics"}})
    objects = definitions(settings)
    views = _views(objects)

    for view, table in VIEW_SOURCES.items():
        batch = views[view].batch_source  # type: ignore[attr-defined]
        assert isinstance(batch, PostgreSQLSource)
        assert batch.get_table_query_string() == f'"analytics"."{table}"'
    services = [o for o in objects if isinstance(o, FeatureService)]
    projected = {p.batch_source.get_table_query_string() for s in services for p in s.feature_view_projections}  # type: ignore[union-attr]
    assert projected == {f'"analytics"."{table}"' for table in VIEW_SOURCES.values()}


def test_the_cli_objects_read_the_default_layout_and_the_project_matches() -> None:
    """The module-level objects (what `feast` registers) are the library's over the default RECSYS_HOME."""
    config = yaml.safe_load((REPO / "feature_store.yaml").read_text())
    assert config["project"] == PROJECT == "recsys"
    default = Settings(home=Path("var"))
    assert (REPO / config["registry"]).resolve() == default.feast_registry
    assert (REPO / config["online_store"]["path"]).resolve() == default.online_sqlite_path

    module = _repo_module(REPO.resolve())
    library = _views(definitions(default))
    for view in VIEW_SOURCES:
        cli_path = (REPO / getattr(module, view).batch_source.path).resolve()
        assert str(cli_path) == library[view].batch_source.path  # type: ignore[attr-defined]


def test_feast_plan_runs_in_the_repo_without_the_recsys_environment(tmp_path: Path) -> None:
    """`cd feature_repo && feast plan` in a copy of the default layout: no env, the sources and state under ../var."""
    repo = Path(shutil.copytree(REPO, tmp_path / "feature_repo", ignore=shutil.ignore_patterns("__pycache__")))
    (tmp_path / "var" / "feast").mkdir(parents=True)
    feast = Path(sys.executable).parent / "feast"

    done = subprocess.run([str(feast), "plan"], cwd=repo, env=_clean_env(), capture_output=True, text=True, check=False)

    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("user_stats", "item_stats", "user_recent_items", "item_text_embedding"):
        assert f"Created feature view {name}" in done.stdout
    assert "Created feature service recommender_v1_user" in done.stdout
    assert (tmp_path / "var" / "feast" / "registry.db").is_file()


def test_a_dir_without_the_definitions_file_is_refused(tmp_path: Path) -> None:
    from recsys.errors import FeatureStoreError

    (tmp_path / "feature_store.yaml").write_text((REPO / "feature_store.yaml").read_text())
    with pytest.raises(FeatureStoreError, match=REPO_MODULE):
        definitions(Settings(home=tmp_path / "home", feast_repo=tmp_path))
