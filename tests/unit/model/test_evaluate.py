"""Evaluation: temporal split, exact recall/ndcg on hand-made rankings, popularity baseline."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from recsys.errors import TrainingError
from recsys.model.evaluate import (
    evaluate,
    evaluate_side_by_side,
    popular_item_ids,
    popularity_baseline,
    rank_metrics,
    temporal_split,
)

ITEMS = np.array([10, 20, 30, 40], np.int64)


def test_rank_metrics_hand_values() -> None:
    recall, ndcg = rank_metrics(np.array([1, 2, 3]), {2, 4}, k=3)
    assert recall == pytest.approx(0.5)
    assert ndcg == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert rank_metrics(np.array([4, 2]), {2, 4}, k=2) == pytest.approx((1.0, 1.0))
    assert rank_metrics(np.array([7, 8]), {2}, k=2) == (0.0, 0.0)


def test_evaluate_excludes_training_items_and_averages_over_users() -> None:
    def fixed(users: np.ndarray) -> np.ndarray:
        return np.tile([4.0, 3.0, 2.0, 1.0], (len(users), 1))

    train_pos = {1: {10}, 3: {10}}
    test_pos = {1: {20, 10}, 2: {40}, 3: {10}}  # user 3's only test item was seen in training: not evaluated
    metrics = evaluate(fixed, train_pos, test_pos, ITEMS, k=2)
    # user 1 ranks [20, 30] (10 excluded) -> hit at rank 1; user 2 ranks [10, 20] -> no hit.
    assert metrics == pytest.approx({"recall@2": 0.5, "ndcg@2": 0.5, "users": 2.0})


def test_popularity_baseline_and_order() -> None:
    train_pos = pd.DataFrame({"user_id": [1, 2, 3, 1], "item_id": [30, 30, 20, 20]})
    scores = popularity_baseline(train_pos, ITEMS)(np.array([5, 6]))
    np.testing.assert_array_equal(scores, [[0, 2, 2, 0], [0, 2, 2, 0]])
    assert popular_item_ids(train_pos).tolist() == [20, 30]
    assert popular_item_ids(train_pos, 1).tolist() == [20]


def test_side_by_side_reports_model_and_popularity() -> None:
    train_pos = pd.DataFrame({"user_id": [1, 2, 2], "item_id": [30, 30, 20]})
    test_pos = pd.DataFrame({"user_id": [1, 2], "item_id": [40, 40]})

    def oracle(users: np.ndarray) -> np.ndarray:
        return np.tile([0.0, 0.0, 0.0, 1.0], (len(users), 1))

    result = evaluate_side_by_side(oracle, train_pos, test_pos, ITEMS, k=1)
    assert result["model"]["recall@1"] == 1.0
    assert result["popularity"]["recall@1"] == 0.0  # popularity ranks 20 first for user 1, 10 for user 2


def test_temporal_split_boundary_goes_to_test() -> None:
    times = pd.to_datetime(["2024-01-01 10:00", "2024-01-02 00:00", "2024-01-02 05:00"]).tz_localize("UTC")
    frame = pd.DataFrame({"user_id": [1, 1, 2], "item_id": [1, 2, 3], "event_timestamp": times})
    train, test = temporal_split(frame, pd.Timestamp("2024-01-02"))  # naive = UTC
    assert train["item_id"].tolist() == [1] and test["item_id"].tolist() == [2, 3]
    with pytest.raises(TrainingError, match="holdout side"):
        temporal_split(frame, pd.Timestamp("2025-01-01", tz="UTC"))
