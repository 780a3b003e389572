"""Two-tower layers: shapes, unit norm, OOV users, duplicate masking and the in-batch loss."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys.model.two_tower import (
    MASKED_LOGIT,
    TwoTowerModel,
    build_item_tower,
    build_user_tower,
    in_batch_softmax_loss,
    keras,
    set_oov_to_mean,
)


@pytest.fixture
def user_tower() -> keras.Model:
    keras.utils.set_random_seed(1)
    stats = (np.array([10.0, 0.5], np.float32), np.array([4.0, 0.01], np.float32))
    return build_user_tower(np.array([3, 5, 9]), n_features=2, embedding_dim=4, feature_stats=stats)


def _users(ids: list[int]) -> dict[str, np.ndarray]:
    return {"user_id": np.array(ids, np.int64), "user_features": np.tile(np.float32([10.0, 0.5]), (len(ids), 1))}


def test_user_tower_outputs_unit_vectors(user_tower: keras.Model) -> None:
    out = keras.ops.convert_to_numpy(user_tower(_users([3, 5, 9])))
    assert out.shape == (3, 4) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_unknown_users_share_the_oov_bucket(user_tower: keras.Model) -> None:
    lookup = user_tower.get_layer("user_lookup")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(lookup(np.array([3, 5, 9, 4, -7]))), [1, 2, 3, 0, 0])
    out = keras.ops.convert_to_numpy(user_tower(_users([4, 1000, 3])))
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    assert not np.allclose(out[0], out[2])


def test_oov_row_becomes_the_mean_user(user_tower: keras.Model) -> None:
    set_oov_to_mean(user_tower)
    table = keras.ops.convert_to_numpy(user_tower.get_layer("user_embedding").embeddings)
    np.testing.assert_allclose(table[0], table[1:].mean(axis=0), atol=1e-6)


def test_user_features_are_normalised_inside_the_tower(user_tower: keras.Model) -> None:
    norm = user_tower.get_layer("user_feature_norm")
    out = keras.ops.convert_to_numpy(norm(np.array([[12.0, 0.6]], np.float32)))
    np.testing.assert_allclose(out, [[1.0, 1.0]], atol=1e-4)  # (12-10)/2, (0.6-0.5)/0.1


def test_item_tower_outputs_unit_vectors() -> None:
    tower = build_item_tower(text_dim=6, n_features=0, embedding_dim=4)
    out = tower(
        {
            "item_embedding": np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32),
            "item_features": np.zeros((5, 0), np.float32),
        }
    )
    out = keras.ops.convert_to_numpy(out)
    assert out.shape == (5, 4)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


def test_in_batch_loss_hand_values() -> None:
    loss = lambda x: float(keras.ops.convert_to_numpy(in_batch_softmax_loss(np.array(x, np.float32))))  # noqa: E731
    assert loss(np.zeros((4, 4))) == pytest.approx(math.log(4), rel=1e-6)
    assert loss([[1.0, 0.0], [0.0, 1.0]]) == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)
    assert loss(np.eye(3) * 50) == pytest.approx(0.0, abs=1e-6)


def test_two_tower_masks_copies_of_the_positive(user_tower: keras.Model) -> None:
    item_tower = build_item_tower(text_dim=6, n_features=0, embedding_dim=4)
    model = TwoTowerModel(user_tower, item_tower, temperature=0.5)
    batch = {
        **_users([3, 5, 9]),
        "item_id": np.array([7, 7, 8], np.int64),
        "item_embedding": np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32),
        "item_features": np.zeros((3, 0), np.float32),
    }
    logits = keras.ops.convert_to_numpy(model(batch))
    assert logits[0, 1] == MASKED_LOGIT and logits[1, 0] == MASKED_LOGIT
    assert np.all(np.abs(np.diag(logits)) <= 2.0 + 1e-5)  # cosine / 0.5
    assert np.all(np.abs(logits[2, :2]) <= 2.0 + 1e-5)


def test_two_tower_config_round_trip(user_tower: keras.Model) -> None:
    model = TwoTowerModel(user_tower, build_item_tower(6, 0, 4), temperature=0.2)
    clone = TwoTowerModel.from_config(model.get_config())
    assert clone.temperature == 0.2 and clone.user_tower.output.shape[-1] == 4
    with pytest.raises(ValueError, match="temperature"):
        TwoTowerModel(user_tower, build_item_tower(6, 0, 4), temperature=0.0)
