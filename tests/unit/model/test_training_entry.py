"""The training entry point's config file parses into ModelSettings and rejects unknown keys."""

from __future__ import annotations

import importlib.util
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest

from recsys.config import ModelSettings
from recsys.errors import ConfigError

TRAINING_DIR = Path(__file__).resolve().parents[3] / "training"


def _entry() -> ModuleType:
    spec = importlib.util.spec_from_file_location("training_entry", TRAINING_DIR / "train.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_default_config_is_the_model_settings_defaults() -> None:
    assert _entry().load_model_settings(TRAINING_DIR / "configs" / "default.yaml") == ModelSettings()


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("epochs: 2\nepoch: 3\n")
    with pytest.raises(ConfigError, match="epoch"):
        _entry().load_model_settings(cfg)


def test_interval_arguments() -> None:
    args = _entry().parse_args(["--end", "2024-03-01"])
    assert args.end == datetime(2024, 3, 1, tzinfo=UTC)
    assert args.start == datetime(2024, 2, 29, tzinfo=UTC)
    with pytest.raises(SystemExit):
        _entry().parse_args(["--end", "2024-03-01", "--start", "2024-03-02"])


@pytest.mark.parametrize("path", sorted((TRAINING_DIR / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    settings = _entry().load_model_settings(path)
    assert settings.epochs >= 1 and settings.embedding_dim >= 1
