"""The one scoring path: the numpy tower equals Keras, top k equals a stable argsort, batching changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from recsys.errors import UnsupportedLayer
from recsys.model import two_tower as tt
from recsys.model.ensemble import join_towers
from recsys.scoring import CompiledTower, NumpyTower, Scorer, columns_of, top_k_indices, top_k_rows

N_USERS, N_ITEMS, F, R, D = 20, 50, 3, 6, 8


def _tower(pooling: str = "mean", hidden: int = 0, members: int = 1, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(N_ITEMS, 12)).astype(np.float32)
    towers = []
    for _ in range(members):
        core = tt.build_user_core(
            N_USERS,
            F,
            D,
            (rng.normal(size=F), rng.random(F) + 0.5),
            text,
            R,
            history_id_dim=4,
            hidden_units=hidden,
            position_pooling=pooling == "position",
            history_attention=pooling == "attention",
        )
        for weight in core.weights:  # trained-looking weights, not the initial ones
            if weight.trainable:
                weight.assign(rng.normal(size=weight.shape).astype(np.float32) * 0.3)
        towers.append(
            tt.build_user_tower(np.arange(1, N_USERS + 1), F, D, core=core, item_vocabulary=np.arange(1, N_ITEMS + 1))
        )
    return towers[0] if members == 1 else join_towers(towers, 1 / np.sqrt(members), "user_tower")


def _inputs(batch: int = 16, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    recent = np.where(rng.random((batch, R)) < 0.4, -1, rng.integers(1, N_ITEMS + 5, (batch, R))).astype(np.int64)
    recent[0] = -1  # a user with no history
    return {
        "user_id": rng.integers(0, N_USERS + 5, batch).astype(np.int64),  # some unknown (OOV) users
        "user_features": rng.normal(size=(batch, F)).astype(np.float32),
        "recent_item_ids": recent,
    }


@pytest.mark.parametrize(("pooling", "hidden", "members"), [("mean", 0, 1), ("position", 5, 1), ("mean", 0, 3)])
def test_numpy_tower_equals_keras(pooling: str, hidden: int, members: int) -> None:
    tower = _tower(pooling, hidden, members)
    inputs = _inputs()
    np.testing.assert_allclose(NumpyTower(tower)(inputs), tower.predict(inputs, verbose=0), atol=2e-6)


def test_a_tower_with_attention_runs_as_a_compiled_function() -> None:
    tower = _tower("attention")
    inputs = _inputs()
    with pytest.raises(UnsupportedLayer, match=r"Cropping1D|MultiHeadAttention"):
        NumpyTower(tower)
    np.testing.assert_allclose(CompiledTower(tower)(inputs), tower.predict(inputs, verbose=0), atol=2e-6)


@dataclass
class _Model:
    user_tower: Any
    item_ids: np.ndarray
    item_embeddings: np.ndarray


def test_a_users_scores_do_not_depend_on_the_batch() -> None:
    rng = np.random.default_rng(2)
    model = _Model(_tower(members=3), np.arange(1, N_ITEMS + 1), rng.normal(size=(N_ITEMS, 3 * D)).astype(np.float32))
    scorer = Scorer(model)
    inputs = _inputs(batch=9)
    ids, feats, recent = inputs["user_id"], inputs["user_features"], list(inputs["recent_item_ids"])

    together = scorer.scores(scorer.user_vectors(ids, feats, recent))
    alone = np.concatenate(
        [scorer.scores(scorer.user_vectors(ids[i : i + 1], feats[i : i + 1], recent[i : i + 1])) for i in range(9)]
    )

    assert np.array_equal(together, alone)  # bit for bit, not approximately


def test_top_k_equals_a_stable_argsort_without_the_excluded_columns() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        scores = rng.integers(0, 6, n).astype(np.float32)  # many ties
        exclude = rng.choice(n, size=int(rng.integers(0, n + 1)), replace=False)
        k = int(rng.integers(1, n + 3))
        masked = scores.astype(np.float64)
        masked[exclude] = -np.inf
        order = np.argsort(-masked, kind="stable")
        expected = [int(c) for c in order if np.isfinite(masked[c])][:k]
        assert top_k_indices(scores, k, exclude).tolist() == expected


def test_top_k_rows_pads_with_minus_one_and_skips_non_finite_scores() -> None:
    scores = np.array([[0.1, np.nan, 0.3], [1.0, 2.0, -np.inf]], np.float32)
    assert top_k_rows(scores, [np.array([2]), None], 3).tolist() == [[0, -1, -1], [1, 0, -1]]


def test_columns_of_maps_ids_to_rows_and_skips_unknown_ids() -> None:
    cols = columns_of(np.array([30, 10, 20], np.int64))
    assert cols([20, 99, 30]).tolist() == [2, 0]
    assert cols([]).tolist() == []


def test_an_ensembles_user_vocabulary_is_its_members_one_vocabulary() -> None:
    from recsys.serving.recommender import user_vocabulary

    assert user_vocabulary(_tower(members=3)) == frozenset(range(1, N_USERS + 1))
