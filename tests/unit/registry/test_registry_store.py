"""Model registry on BentoML's local store, under a temporary BENTOML_HOME, and bento builds pinned to one model."""

from __future__ import annotations

import filecmp
import shutil
from pathlib import Path

import pytest
import yaml

from recsys.artifact import ARTIFACT_FILES
from recsys.config import Settings
from recsys.errors import RegistryError
from recsys.registry.store import bento_models, build_bento, get_model, list_models, save_model
from recsys.serving.testing import ExampleArtifact


def test_save_then_get_round_trips_files_and_metadata(settings: Settings, registry_artifact: ExampleArtifact) -> None:
    tag = save_model(settings, registry_artifact.directory, {"metrics": {"model": {"recall_at_10": 0.61}}})

    model = get_model(settings, tag)
    assert model.tag == tag and model.name == settings.model_name
    assert model.path.is_relative_to(settings.bentoml_home)  # type: ignore[arg-type]
    assert model.metadata["metrics"] == {"model": {"recall_at_10": 0.61}}  # the caller's value wins
    assert model.metadata["user_feature_names"] == registry_artifact.manifest["user_feature_names"]
    assert model.metadata["feature_service"] == "recommender_v1_user"
    assert model.labels["feature_service"] == "recommender_v1_user"
    for name in ARTIFACT_FILES:
        assert filecmp.cmp(registry_artifact.directory / name, model.path / name, shallow=False), name
    assert get_model(settings, model.version).tag == tag
    assert get_model(settings).tag == tag


def test_latest_is_the_newest_version_and_list_is_newest_first(
    settings: Settings, registry_artifact: ExampleArtifact
) -> None:
    first = save_model(settings, registry_artifact.directory, {"code_version": "a"})
    second = save_model(settings, registry_artifact.directory, {"code_version": "b"})

    assert first != second
    assert get_model(settings, "latest").tag == second
    assert [m.tag for m in list_models(settings)] == [second, first]
    assert get_model(settings, first).metadata["code_version"] == "a"


def test_empty_store_says_what_to_do(settings: Settings) -> None:
    assert list_models(settings) == []
    with pytest.raises(RegistryError, match="save_model"):
        get_model(settings)


def test_incomplete_artifact_is_refused_and_nothing_is_stored(
    settings: Settings, registry_artifact: ExampleArtifact, tmp_path: Path
) -> None:
    broken = Path(shutil.copytree(registry_artifact.directory, tmp_path / "broken"))
    (broken / "item_embeddings.npy").unlink()

    with pytest.raises(RegistryError, match=r"item_embeddings\.npy"):
        save_model(settings, broken, {})
    assert list_models(settings) == []


def test_each_settings_home_is_its_own_store(registry_artifact: ExampleArtifact, tmp_path: Path) -> None:
    one, two = Settings(home=tmp_path / "one"), Settings(home=tmp_path / "two")

    tag = save_model(one, registry_artifact.directory, {})

    assert list_models(two) == []
    assert [m.tag for m in list_models(one)] == [tag]
    assert (tmp_path / "one" / "bentoml" / "models" / one.model_name).is_dir()


def test_bento_pins_exactly_the_requested_model(settings: Settings, registry_artifact: ExampleArtifact) -> None:
    pinned = save_model(settings, registry_artifact.directory, {"code_version": "old"})
    newer = save_model(settings, registry_artifact.directory, {"code_version": "new"})

    bento_tag = build_bento(settings, pinned)

    assert bento_models(settings, bento_tag) == [pinned]  # not the newer "latest"
    name, version = bento_tag.split(":")
    bento_dir = settings.bentoml_home / "bentos" / name / version  # type: ignore[operator]
    info = yaml.safe_load((bento_dir / "bento.yaml").read_text())
    assert info["args"] == {"model_tag": pinned}
    # the bento records its one model and what the service binds to at start
    manifest = registry_artifact.manifest
    assert info["labels"]["model_version"] == pinned.split(":")[1]
    assert info["labels"]["feature_service"] == manifest["feature_service"]
    assert info["labels"]["data_interval_end"] == manifest["data_interval_end"]
    assert info["labels"]["catalog_fingerprint"] == get_model(settings, pinned).metadata["catalog_fingerprint"]
    assert [m["tag"] for service in info["services"] for m in service["models"]] == [pinned]
    assert newer not in (bento_dir / "bento.yaml").read_text()
    # self-contained: the service and the recsys package source travel in the bento, nothing is locked
    assert (bento_dir / "src" / "service.py").is_file()
    assert (bento_dir / "src" / "recsys" / "serving" / "recommender.py").is_file()
    assert not list(bento_dir.rglob("requirements.lock.txt"))


def test_building_for_an_unknown_model_fails_before_building(settings: Settings) -> None:
    with pytest.raises(RegistryError, match="not in the model store"):
        build_bento(settings, "doesnotexist")
    assert not (settings.bentoml_home / "bentos" / settings.bento_name).exists()  # type: ignore[operator]
