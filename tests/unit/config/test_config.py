from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from recsys.config import Settings, get_settings, project_dir


def test_defaults_put_every_path_under_home(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    assert s.lake == tmp_path / "lake"
    assert s.duckdb_path == tmp_path / "warehouse.duckdb"
    assert s.marts == tmp_path / "marts"
    assert s.source_url == SecretStr(f"sqlite:///{tmp_path / 'source.db'}")
    assert s.feature_service_name == "recommender_v1"
    assert (s.warehouse.target, s.warehouse.postgres.schema_name, s.quality.events.min_rows) == (
        "duckdb",
        "analytics",
        1,
    )


def test_env_overrides_yaml_and_nested_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "recsys.yaml"
    cfg.write_text(f"home: {tmp_path}/h\nmodel:\n  epochs: 9\n  top_k: 5\nonline_store: redis\n")
    monkeypatch.setenv("RECSYS_CONFIG", str(cfg))
    monkeypatch.setenv("RECSYS_MODEL__EPOCHS", "2")
    s = get_settings()
    assert s.home == tmp_path / "h"
    assert s.model.epochs == 2  # env wins over the file
    assert s.model.top_k == 5
    assert s.online_store == "redis"


def test_sections_are_typed_and_set_from_yaml_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "recsys.yaml"
    cfg.write_text(
        "warehouse:\n  target: postgres\n  postgres:\n    dbname: wh\nquality:\n  events:\n    min_rows: 7\n"
    )
    monkeypatch.setenv("RECSYS_CONFIG", str(cfg))
    monkeypatch.setenv("RECSYS_WAREHOUSE__POSTGRES__PORT", "6543")
    monkeypatch.setenv("RECSYS_WAREHOUSE__MARTS_DIR", "elsewhere/marts")
    s = get_settings()
    assert (s.warehouse.target, s.warehouse.postgres.dbname, s.warehouse.postgres.port) == ("postgres", "wh", 6543)
    assert s.quality.events.min_rows == 7
    assert s.quality.items.min_rows == 0  # the rest keeps its defaults
    assert s.marts == project_dir() / "elsewhere" / "marts"  # relative paths: from the project, not the cwd


def test_a_typo_in_a_section_fails_at_load(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="min_rowz"):
        Settings(home=tmp_path, quality={"events": {"min_rowz": 3}})
    with pytest.raises(ValidationError, match="target"):
        Settings(home=tmp_path, warehouse={"target": "snowflake"})


def test_renamed_settings_are_an_error_that_names_the_new_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_WAREHOUSE_TARGET", "postgres")
    with pytest.raises(ValueError, match="RECSYS_WAREHOUSE_TARGET is now RECSYS_WAREHOUSE__TARGET"):
        Settings(home=tmp_path)


def test_tool_env_recreates_the_paths_in_a_subprocess(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(home=tmp_path / "h", warehouse={"marts_dir": tmp_path / "m", "duckdb_path": tmp_path / "w.duckdb"})
    for key, value in s.tool_env().items():
        monkeypatch.setenv(key, value)
    again = Settings()
    assert (again.home, again.marts, again.duckdb_path, again.lake) == (s.home, s.marts, s.duckdb_path, s.lake)


def test_secrets_are_masked_in_logs(tmp_path: Path) -> None:
    s = Settings(
        home=tmp_path,
        source_url="mysql+pymysql://app:hunter2@db:3306/site",
        warehouse={"postgres": {"host": "pg", "password": "swordfish"}},
    )
    shown = str(s.redacted())
    assert "hunter2" not in shown and "swordfish" not in shown
    assert "'host': 'pg'" in shown


def test_mongo_items_without_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="RECSYS_MONGO_URL"):
        Settings(home=tmp_path, items_source="mongo")


def test_missing_config_file_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        Settings()


def test_two_tower_options_are_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECSYS_MODEL__HISTORY_LENGTH", "25")
    monkeypatch.setenv("RECSYS_MODEL__LOSS", "mixed")
    model = Settings(home=tmp_path).model
    assert (model.history_length, model.loss) == (25, "mixed")
    with pytest.raises(ValidationError, match="loss"):
        Settings(home=tmp_path, model={"loss": "bce"})
