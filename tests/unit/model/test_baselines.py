"""Baselines on hand-made data: popularity variants, item kNN, EASE against its formula, ALS, genres."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.model import baselines

ITEMS = np.array([1, 2, 3, 4], np.int64)


def _pos(pairs: list[tuple[int, int]], days: list[int] | None = None) -> pd.DataFrame:
    days = days or [0] * len(pairs)
    times = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(days, unit="D")
    return pd.DataFrame({"user_id": [u for u, _ in pairs], "item_id": [i for _, i in pairs], "event_timestamp": times})


def test_popularity_and_recency_popularity() -> None:
    pos = _pos([(1, 1), (2, 1), (3, 2)], days=[0, 0, 10])
    np.testing.assert_array_equal(baselines.popularity(pos, ITEMS)(np.array([9])), [[2, 1, 0, 0]])
    scores = baselines.recency_popularity(pos, ITEMS, half_life_days=10)(np.array([9]))
    np.testing.assert_allclose(scores, [[1.0, 1.0, 0, 0]])  # two positives 10 days old = one fresh one
    with pytest.raises(ValueError, match="half_life"):
        baselines.recency_popularity(pos, ITEMS, 0)


def test_item_knn_scores_co_occurring_items() -> None:
    pos = _pos([(1, 1), (1, 2), (2, 1), (2, 2), (3, 3), (3, 4)])
    scores = baselines.item_knn(pos, ITEMS, neighbours=1)(np.array([4, 99]))
    assert scores.shape == (2, 4) and not scores[1].any()  # user 99 is unknown
    pos2 = _pos([(1, 1), (1, 2), (2, 1), (2, 2), (3, 3), (3, 4), (4, 1)])
    s = baselines.item_knn(pos2, ITEMS, neighbours=1)(np.array([4]))
    assert s[0, 1] == pytest.approx(2 / np.sqrt(3 * 2)) and s[0, 2] == 0 and s[0, 3] == 0


def test_ease_matches_the_closed_form() -> None:
    pos = _pos([(1, 1), (1, 2), (2, 2), (2, 3), (3, 1), (3, 3), (3, 2)])
    x = np.array([[1, 1, 0], [0, 1, 1], [1, 1, 1]], float)
    p = np.linalg.inv(x.T @ x + 2.0 * np.eye(3))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    scores = baselines.ease(pos, ITEMS, l2=2.0)(np.array([1, 2, 3]))
    np.testing.assert_allclose(scores[:, :3], x @ b, atol=1e-9)
    assert not scores[:, 3].any()  # item 4 has no fit positives


def test_als_is_seeded_and_ranks_co_occurring_items() -> None:
    pos = _pos([(u, i) for u in range(1, 21) for i in ((1, 2) if u <= 10 else (3, 4))][:-1])
    run = [baselines.als(pos, ITEMS, factors=4, regularization=0.01, alpha=10, iterations=10, seed=1) for _ in range(2)]
    a, b = run[0](np.array([20, 999])), run[1](np.array([20, 999]))
    np.testing.assert_allclose(a, b)
    assert a[0, 2] > a[0, 0] and not a[1].any()  # user 20 saw item 3 only: item 4 beats item 1's group


def test_genre_popularity_global_and_per_user() -> None:
    genres = {1: ["a"], 2: ["b"], 3: ["a", "b"], 4: []}
    pos = _pos([(1, 1), (1, 1), (2, 2)])
    np.testing.assert_allclose(baselines.genre_popularity(pos, ITEMS, genres)(np.array([5])), [[2 / 3, 1 / 3, 0.5, 0]])
    personal = baselines.user_genre_popularity(pos, ITEMS, genres, prior=0.0)(np.array([2]))
    np.testing.assert_allclose(personal, [[0, 1, 0.5, 0]])
