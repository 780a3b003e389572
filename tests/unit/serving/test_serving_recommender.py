"""Recommender on a tiny real artifact: ranking by hand-computed dot products, popularity fallback, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import ArtifactError, FeatureStoreError
from recsys.serving.features import select_features
from recsys.serving.recommender import (
    REASON_NO_FEATURES,
    REASON_UNKNOWN_USER,
    InvalidRequest,
    Recommender,
)
from recsys.serving.testing import ExampleArtifact

FEATURES = [40.0, 6.0, 0.14]


def test_known_user_ranks_items_by_dot_product(recommender: Recommender, example_artifact: ExampleArtifact) -> None:
    result = recommender.recommend(102, k=5, user_features=FEATURES)

    # By hand: u = l2(concat(E[row of 102], features) @ W + b); scores = item_embeddings @ u
    x = np.concatenate([example_artifact.user_embedding[2], np.asarray(FEATURES, dtype=np.float32)])
    u = x @ example_artifact.dense_kernel + example_artifact.dense_bias
    u = u / np.linalg.norm(u)
    scores = example_artifact.item_embeddings @ u
    order = np.argsort(-scores)[:5]
    assert result.item_ids == [int(i) for i in example_artifact.item_ids[order]]
    np.testing.assert_allclose(result.scores, scores[order], atol=1e-5)
    assert result.scores == sorted(result.scores, reverse=True)
    assert result.fallback is False and result.fallback_reason is None
    assert result.model_version == "example-v1"


def test_different_features_change_the_ranking(recommender: Recommender, example_artifact: ExampleArtifact) -> None:
    other = [0.0, 0.0, -30.0]
    assert recommender.recommend(102, 12, other).item_ids == example_artifact.expected_ranking(102, other)
    assert recommender.recommend(102, 12, other).item_ids != recommender.recommend(102, 12, FEATURES).item_ids


def test_unknown_user_gets_popular_items(recommender: Recommender, example_artifact: ExampleArtifact) -> None:
    result = recommender.recommend(999_999, k=4, user_features=FEATURES)

    assert result.fallback is True
    assert result.fallback_reason == REASON_UNKNOWN_USER
    assert result.item_ids == [int(i) for i in example_artifact.popular_item_ids[:4]]
    assert result.scores == [1.0, 0.5, pytest.approx(1 / 3), 0.25]


def test_known_user_without_features_gets_popular_items(
    recommender: Recommender, example_artifact: ExampleArtifact
) -> None:
    result = recommender.recommend(101, k=3, user_features=None)

    assert result.fallback is True and result.fallback_reason == REASON_NO_FEATURES
    assert result.item_ids == [int(i) for i in example_artifact.popular_item_ids[:3]]


def test_k_larger_than_catalog_returns_every_item_once(recommender: Recommender) -> None:
    result = recommender.recommend(101, k=100, user_features=FEATURES)
    assert sorted(result.item_ids) == list(range(1001, 1013))


@pytest.mark.parametrize("k", [0, -1, 101, 2.5, "5", True, None])
def test_bad_k_is_rejected_with_a_clear_error(recommender: Recommender, k: object) -> None:
    with pytest.raises(InvalidRequest, match="k must be"):
        recommender.recommend(101, k=k, user_features=FEATURES)  # type: ignore[arg-type]


def test_wrong_number_of_features_is_rejected(recommender: Recommender) -> None:
    with pytest.raises(InvalidRequest, match="expected 3 user features"):
        recommender.recommend(101, k=3, user_features=[1.0, 2.0])


def test_non_finite_features_are_rejected(recommender: Recommender) -> None:
    with pytest.raises(InvalidRequest, match="finite"):
        recommender.recommend(101, k=3, user_features=[1.0, float("nan"), 0.1])


def test_missing_artifact_file_names_the_file(artifact_copy: Path) -> None:
    (artifact_copy / "popular_item_ids.npy").unlink()
    with pytest.raises(ArtifactError, match=r"popular_item_ids\.npy"):
        Recommender(artifact_copy)


def test_manifest_without_feature_names_is_rejected(artifact_copy: Path) -> None:
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    del manifest["user_feature_names"]
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="user_feature_names"):
        Recommender(artifact_copy)


def test_an_item_matrix_changed_after_export_is_rejected(artifact_copy: Path) -> None:
    np.save(artifact_copy / "item_embeddings.npy", np.ones((12, 8), dtype=np.float32))
    with pytest.raises(ArtifactError, match="catalog_fingerprint"):
        Recommender(artifact_copy)


def test_item_matrix_of_wrong_dimension_is_rejected(artifact_copy: Path) -> None:
    manifest = json.loads((artifact_copy / "manifest.json").read_text())
    del manifest["catalog_fingerprint"]  # an artifact from before the fingerprint: the shapes are still checked
    (artifact_copy / "manifest.json").write_text(json.dumps(manifest))
    np.save(artifact_copy / "item_embeddings.npy", np.ones((12, 3), dtype=np.float32))
    with pytest.raises(ArtifactError, match="item embeddings have 3"):
        Recommender(artifact_copy)


def test_select_features_orders_and_matches_full_names() -> None:
    columns = {"user_id": [7], "user_stats__user_ctr_28d": [0.25], "user_clicks_28d": [3]}
    assert select_features(columns, ["user_ctr_28d", "user_clicks_28d"]) == [0.25, 3.0]
    assert select_features({"user_ctr_28d": [None]}, ["user_ctr_28d"]) is None
    with pytest.raises(FeatureStoreError, match="no feature 'user_age'"):
        select_features(columns, ["user_age"])
