"""A model's status in the store: ``promotion: candidate`` when registered, then the gate's decision, stored on
the model itself (labels and metadata) so the registry shows it without reading decisions.jsonl."""

from __future__ import annotations

import filecmp

import pytest

from recsys.artifact import ARTIFACT_FILES
from recsys.config import Settings
from recsys.errors import RegistryError
from recsys.registry import gate, store
from recsys.registry.store import MODEL_INFO_FILE, bentoml_for, get_model, list_models, save_model, set_model_status
from recsys.serving.testing import ExampleArtifact


def test_a_registered_model_is_a_candidate(settings: Settings, registry_artifact: ExampleArtifact) -> None:
    tag = save_model(settings, registry_artifact.directory, {})

    assert get_model(settings, tag).promotion == "candidate"
    assert [m.promotion for m in list_models(settings)] == ["candidate"]


def test_status_labels_and_metadata_are_merged_into_the_stored_model(
    settings: Settings, registry_artifact: ExampleArtifact
) -> None:
    tag = save_model(settings, registry_artifact.directory, {"code_version": "abc"})

    updated = set_model_status(settings, tag, {"promotion": "refused"}, {"promotion": {"reason": "r", "gone": None}})

    assert updated.promotion == "refused" and updated.metadata["promotion"] == {"reason": "r"}  # None left out
    assert updated.labels["code_version"] == "abc" and updated.metadata["code_version"] == "abc"  # kept
    stored = bentoml_for(settings).models.get(tag)  # BentoML itself reads the new status (`bentoml models get`)
    assert stored.info.labels["promotion"] == "refused" and stored.info.metadata["promotion"] == {"reason": "r"}
    assert stored.info.creation_time == get_model(settings, tag).created_at
    for name in ARTIFACT_FILES:
        assert filecmp.cmp(registry_artifact.directory / name, updated.path / name, shallow=False), name
    assert sorted(p.name for p in updated.path.iterdir() if p.name.startswith(".")) == []  # no temp file left


def test_a_status_bentoml_cannot_read_back_leaves_the_model_as_it_was(
    settings: Settings, registry_artifact: ExampleArtifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = save_model(settings, registry_artifact.directory, {})
    info = get_model(settings, tag).path / MODEL_INFO_FILE
    before = info.read_text()
    real, calls = store.get_model, []

    def refuses_the_new_file(s: Settings, t: str = "latest") -> store.RegisteredModel:
        calls.append(t)
        if len(calls) == 2:  # the read-back after the write
            raise ValueError("metadata entries must be basic python types")
        return real(s, t)

    monkeypatch.setattr(store, "get_model", refuses_the_new_file)

    with pytest.raises(RegistryError, match="left unchanged"):
        set_model_status(settings, tag, {"promotion": "promoted"})
    assert info.read_text() == before


def test_the_gate_marks_promoted_and_refused_models(settings: Settings, registry_artifact: ExampleArtifact) -> None:
    first, second = (save_model(settings, registry_artifact.directory, {}) for _ in range(2))

    gate.mark_decision(settings, gate.decide(first, 0.3, None, None, "ndcg@10", 0.0))
    gate.mark_decision(settings, gate.decide(second, 0.2, first, 0.3, "ndcg@10", 0.0))

    promoted, refused = get_model(settings, first), get_model(settings, second)
    assert (promoted.promotion, refused.promotion) == ("promoted", "refused")
    first_decision = promoted.metadata["promotion"]
    assert first_decision["candidate_value"] == 0.3 and "production" not in first_decision  # None: left out
    assert refused.metadata["promotion"]["production_value"] == 0.3
    assert refused.metadata["promotion"]["reason"].startswith("ndcg@10 0.2000 vs production")


def test_an_unknown_model_has_no_status_to_set(settings: Settings) -> None:
    with pytest.raises(RegistryError, match="not in the model store"):
        set_model_status(settings, "recommender:nosuchversion", {"promotion": "promoted"})
