"""Two-tower layers: shapes, unit norm, OOV users, recent-item pooling, the three softmax losses."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from recsys.model.data import index_of
from recsys.model.two_tower import (
    MASKED_LOGIT,
    TwoTowerModel,
    build_item_core,
    build_item_tower,
    build_user_core,
    build_user_tower,
    catalog_softmax_loss,
    in_batch_softmax_loss,
    keras,
    set_oov_to_mean,
)

ITEMS = np.array([11, 12, 13, 14], np.int64)
TEXT = np.eye(4, 6, dtype=np.float32)  # item 11 -> e0, 12 -> e1, ...


@pytest.fixture
def user_tower() -> keras.Model:
    keras.utils.set_random_seed(1)
    stats = (np.array([10.0, 0.5], np.float32), np.array([4.0, 0.01], np.float32))
    return build_user_tower(np.array([3, 5, 9]), n_features=2, embedding_dim=4, feature_stats=stats)


@pytest.fixture
def history_tower() -> keras.Model:
    keras.utils.set_random_seed(2)
    return build_user_tower(
        np.array([3, 5]), 0, 4, item_vocabulary=ITEMS, history_text=TEXT, history_length=3, history_id_dim=2
    )


def _users(ids: list[int]) -> dict[str, np.ndarray]:
    return {"user_id": np.array(ids, np.int64), "user_features": np.tile(np.float32([10.0, 0.5]), (len(ids), 1))}


def _history(ids: list[int], recent: list[list[int]]) -> dict[str, np.ndarray]:
    return {
        "user_id": np.array(ids, np.int64),
        "user_features": np.zeros((len(ids), 0), np.float32),
        "recent_item_ids": np.array(recent, np.int64),
    }


def test_user_tower_outputs_unit_vectors(user_tower: keras.Model) -> None:
    out = keras.ops.convert_to_numpy(user_tower(_users([3, 5, 9])))
    assert out.shape == (3, 4) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert "recent_item_ids" not in user_tower.input  # no history_length: the old two-input contract


def test_unknown_users_share_the_oov_bucket(user_tower: keras.Model) -> None:
    lookup = user_tower.get_layer("user_lookup")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(lookup(np.array([3, 5, 9, 4, -7]))), [1, 2, 3, 0, 0])
    out = keras.ops.convert_to_numpy(user_tower(_users([4, 1000, 3])))
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    assert not np.allclose(out[0], out[2])


def test_index_of_matches_integer_lookup() -> None:
    vocab = np.array([30, 10, 20], np.int64)
    ids = np.array([[10, 20], [30, -1], [0, 99]], np.int64)
    layer = keras.layers.IntegerLookup(vocabulary=vocab, num_oov_indices=1)
    np.testing.assert_array_equal(index_of(vocab, ids), keras.ops.convert_to_numpy(layer(ids)))


def test_oov_row_becomes_the_mean_user(user_tower: keras.Model) -> None:
    core = user_tower.get_layer("user_core")
    set_oov_to_mean(core)
    table = keras.ops.convert_to_numpy(core.get_layer("user_embedding").embeddings)
    np.testing.assert_allclose(table[0], table[1:].mean(axis=0), atol=1e-6)


def test_user_features_are_normalised_inside_the_tower(user_tower: keras.Model) -> None:
    norm = user_tower.get_layer("user_core").get_layer("user_feature_norm")
    out = keras.ops.convert_to_numpy(norm(np.array([[12.0, 0.6]], np.float32)))
    np.testing.assert_allclose(out, [[1.0, 1.0]], atol=1e-4)  # (12-10)/2, (0.6-0.5)/0.1


def test_recent_items_padding_and_unknown_ids_are_ignored(history_tower: keras.Model) -> None:
    out = keras.ops.convert_to_numpy(
        history_tower(_history([3, 3, 3, 3], [[11, 12, -1], [12, 11, 999], [11, 12, 0], [11, -1, -1]]))
    )
    # -1, 0 and 999 are not catalog items: rows 0-2 pool the same two items (order does not matter).
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)
    np.testing.assert_allclose(out[0], out[2], atol=1e-6)
    assert not np.allclose(out[0], out[3])
    empty = keras.ops.convert_to_numpy(history_tower(_history([3], [[-1, -1, -1]])))
    assert np.all(np.isfinite(empty)) and np.linalg.norm(empty) == pytest.approx(1.0, abs=1e-5)


def test_recent_text_table_is_frozen_and_pooled_as_a_unit_mean(history_tower: keras.Model) -> None:
    core = history_tower.get_layer("user_core")
    text = core.get_layer("recent_item_text")
    assert not text.trainable
    rows = np.array([[1, 2, 0]], np.int32)  # items 11 and 12, then padding
    pooled = keras.ops.convert_to_numpy(
        core.get_layer("recent_text_mean")(core.get_layer("recent_text_pool")(text(rows)))
    )
    np.testing.assert_allclose(pooled, [[1 / math.sqrt(2), 1 / math.sqrt(2), 0, 0, 0, 0]], atol=1e-6)
    fill = keras.ops.convert_to_numpy(core.get_layer("recent_fill")(core.get_layer("recent_item_valid")(rows)))
    np.testing.assert_allclose(fill, [[2 / 3]], atol=1e-6)


def test_position_pooling_starts_as_the_mean_and_round_trips(tmp_path: Path) -> None:
    mean_core = build_user_core(3, 0, 4, history_text=TEXT, history_length=3, history_id_dim=2)
    by_position = build_user_core(3, 0, 4, history_text=TEXT, history_length=3, history_id_dim=2, position_pooling=True)
    weights = keras.ops.convert_to_numpy(by_position.get_layer("recent_text_position_weights").kernel)
    np.testing.assert_allclose(weights, np.full((3, 1), 1 / 3), atol=1e-7)  # newest first, equal at the start
    rows = np.array([[1, 2, 0]], np.int32)
    text = keras.ops.convert_to_numpy(by_position.get_layer("recent_item_text")(rows))
    pooled = keras.ops.convert_to_numpy(by_position.get_layer("recent_text_pool")(
        by_position.get_layer("recent_text_position_weights")(by_position.get_layer("recent_text_by_position")(text))
    ))  # fmt: skip
    np.testing.assert_allclose(pooled, keras.ops.convert_to_numpy(mean_core.get_layer("recent_text_pool")(text)))
    tower = build_user_tower(
        np.array([3, 5, 7]), 0, 4, core=by_position, item_vocabulary=ITEMS, history_length=3, history_id_dim=2
    )
    tower.save(tmp_path / "tower.keras")
    loaded = keras.saving.load_model(tmp_path / "tower.keras")  # built-in layers only: no custom objects
    batch = {
        "user_id": np.array([3]),
        "user_features": np.zeros((1, 0), np.float32),
        "recent_item_ids": np.array([[12, 11, -1]]),
    }
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(loaded(batch)), keras.ops.convert_to_numpy(tower(batch)), atol=1e-6
    )


def test_attention_pooling_ignores_padding_and_round_trips(tmp_path: Path) -> None:
    core = build_user_core(3, 0, 4, history_text=TEXT, history_length=3, history_id_dim=2, history_attention=True)
    tower = build_user_tower(
        np.array([3, 5, 7]), 0, 4, core=core, item_vocabulary=ITEMS, history_length=3, history_id_dim=2
    )
    batch = {
        "user_id": np.array([3, 3, 3]),
        "user_features": np.zeros((3, 0), np.float32),
        "recent_item_ids": np.array([[12, 11, -1], [12, 11, 999], [-1, -1, -1]]),  # 999: not in the catalog
    }
    out = keras.ops.convert_to_numpy(tower(batch))
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)  # unknown ids are padding
    assert np.all(np.isfinite(out[2]))  # an empty history attends over nothing without NaN
    tower.save(tmp_path / "tower.keras")
    loaded = keras.saving.load_model(tmp_path / "tower.keras")  # built-in layers only
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(batch)), out, atol=1e-6)


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


def test_softmax_losses_hand_values() -> None:
    def value(x: object) -> float:
        return float(keras.ops.convert_to_numpy(x))

    assert value(in_batch_softmax_loss(np.zeros((4, 4), np.float32))) == pytest.approx(math.log(4), rel=1e-6)
    assert value(in_batch_softmax_loss(np.float32([[1, 0], [0, 1]]))) == pytest.approx(math.log(1 + math.exp(-1)))
    assert value(in_batch_softmax_loss(np.eye(3, dtype=np.float32) * 50)) == pytest.approx(0.0, abs=1e-6)
    logits = np.float32([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(3)) / 2
    assert value(catalog_softmax_loss(logits, np.array([0, 2]))) == pytest.approx(expected, rel=1e-6)


def _model(loss: str, num_sampled: int = 0, mask_history: bool = False) -> TwoTowerModel:
    keras.utils.set_random_seed(3)
    user_core = build_user_core(3, 0, 4, history_text=TEXT, history_length=2)
    item_core = build_item_core(6, 0, 4, n_item_ids=4)
    catalog = {
        "item_embedding": TEXT,
        "item_features": np.zeros((4, 0), np.float32),
        "item_index": np.arange(1, 5, dtype=np.int32),
    }
    return TwoTowerModel(
        user_core, item_core, catalog, temperature=0.5, loss=loss, num_sampled=num_sampled, mask_history=mask_history
    )


def _batch() -> dict[str, np.ndarray]:
    return {
        "user_index": np.array([1, 2, 3], np.int32),
        "user_features": np.zeros((3, 0), np.float32),
        "recent_rows": np.array([[1, 0], [2, 3], [0, 0]], np.int32),
        "item_row": np.array([2, 2, 0], np.int32),
    }


def test_full_catalog_logits_cover_every_item() -> None:
    model = _model("full_catalog")
    logits = keras.ops.convert_to_numpy(model(_batch()))
    assert logits.shape == (3, 4) and np.all(np.abs(logits) <= 2.0 + 1e-5)  # cosine / 0.5, nothing masked
    loss = model.compute_loss(x=_batch(), y_pred=logits)
    assert float(keras.ops.convert_to_numpy(loss)) == pytest.approx(
        float(keras.ops.convert_to_numpy(catalog_softmax_loss(logits, _batch()["item_row"])))
    )


def test_history_items_are_not_negatives_but_the_positive_stays() -> None:
    # recent_rows [[1, 0], [2, 3], [0, 0]]: row 0 saw catalog row 0, row 1 saw rows 1 and 2 (2 is its positive).
    logits = keras.ops.convert_to_numpy(_model("full_catalog", mask_history=True)(_batch()))
    masked = logits == MASKED_LOGIT
    assert masked.tolist() == [
        [True, False, False, False],
        [False, True, False, False],
        [False, False, False, False],
    ]
    in_batch = keras.ops.convert_to_numpy(_model("in_batch", mask_history=True)(_batch()))  # candidates: rows 2, 2, 0
    assert in_batch[0, 2] == MASKED_LOGIT  # row 0's history item is batch column 2's positive
    assert in_batch[1, 1] != MASKED_LOGIT  # row 1's own column: its positive, though in its history


def test_in_batch_and_mixed_mask_copies_of_the_positive() -> None:
    logits = keras.ops.convert_to_numpy(_model("in_batch")(_batch()))
    assert logits.shape == (3, 3)
    assert logits[0, 1] == MASKED_LOGIT and logits[1, 0] == MASKED_LOGIT  # both rows' positive is item row 2
    assert abs(logits[2, 0]) <= 2.0 + 1e-5 and abs(logits[0, 0]) <= 2.0 + 1e-5
    mixed = keras.ops.convert_to_numpy(_model("mixed", num_sampled=5)(_batch()))
    assert mixed.shape == (3, 8)
    assert np.all(np.abs(np.diag(mixed[:, :3])) <= 2.0 + 1e-5)


def test_bad_model_arguments_fail_clearly() -> None:
    with pytest.raises(ValueError, match="temperature"):
        TwoTowerModel(build_user_core(1, 0, 2), build_item_core(6, 0, 2), {"item_embedding": TEXT}, temperature=0.0)
    with pytest.raises(ValueError, match="loss"):
        _model("sampled")
    with pytest.raises(ValueError, match="history_text"):
        build_user_core(1, 0, 2, history_length=3)
