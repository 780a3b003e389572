from pathlib import Path

import pytest
from pydantic import ValidationError

from recsys.config import Settings, get_settings


def test_defaults_put_every_path_under_home(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    assert s.lake == tmp_path / "lake"
    assert s.warehouse == tmp_path / "warehouse.duckdb"
    assert s.source_url is not None
    assert s.source_url.get_secret_value() == f"sqlite:///{tmp_path / 'source.db'}"
    assert s.feature_service_name == "recommender_v1"


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


def test_secrets_are_masked_in_logs(tmp_path: Path) -> None:
    s = Settings(
        home=tmp_path,
        source_url="mysql+pymysql://app:hunter2@db:3306/site",
        postgres={"host": "pg", "password": "swordfish"},
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
