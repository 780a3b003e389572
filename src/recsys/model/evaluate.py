"""Offline evaluation of the pipeline and the promotion gate: a time split, recall/ndcg@k, popularity.

* ``temporal_split``: rows before the holdout start train, the rest test (never random).
* ``evaluate`` / ``evaluate_side_by_side``: the pipeline's single-holdout evaluation (model vs popularity); the
  promotion gate scores candidate and production with ``evaluate``.
* ``popular_item_ids``: the artifact's popularity fallback list.

The benchmarks' full protocol (tuning, bootstrap intervals, cold start, the report) is ``recsys.model.protocol``
(docs/evaluation.md).

Definitions (binary relevance, per test user, then averaged over test users):
``recall@k = |top-k ∩ relevant| / |relevant|``; ``ndcg@k = DCG / IDCG`` with ``DCG = Σ 1/log2(rank + 1)``
over hits at 1-based ranks ≤ k and ``IDCG`` the DCG of a perfect ranking (``min(|relevant|, k)`` hits).
Items a user interacted with in training are removed from that user's ranking and from their relevant set.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from recsys.errors import TrainingError
from recsys.scoring import columns_of, top_k_indices

ScoreFn = Callable[[np.ndarray], np.ndarray]
"""user ids ``[U]`` -> scores ``[U, n_items]``, columns in the order of the evaluated ``item_ids``."""

Positives = Mapping[int, set[int]]
"""``{user_id: {item_id, ...}}``: each user's positive items."""


def _utc(ts: datetime | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(ts)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def temporal_split(
    interactions: pd.DataFrame, holdout_start: datetime | pd.Timestamp, column: str = "event_timestamp"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows before ``holdout_start`` (train) and from it on (test); naive times are taken as UTC."""
    if column not in interactions.columns:
        raise TrainingError(f"interactions lack the time column {column!r}; the split is by time, never random.")
    times = pd.to_datetime(interactions[column])
    times = times.dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")
    is_test = (times >= _utc(holdout_start)).to_numpy()
    train, test = interactions[~is_test], interactions[is_test]
    if train.empty or test.empty:
        side = "training" if train.empty else "holdout"
        raise TrainingError(
            f"the {side} side of the split at {holdout_start} is empty ({len(interactions)} interactions from "
            f"{times.min()} to {times.max()}): move the holdout start or change model.holdout_days."
        )
    return train, test


def positives_by_user(pairs: pd.DataFrame) -> dict[int, set[int]]:
    """``{user_id: {item_id, ...}}`` from a frame of (user_id, item_id) positives."""
    grouped = pairs.groupby("user_id")["item_id"].agg(lambda s: {int(v) for v in s})
    return {int(u): items for u, items in grouped.items()}


def popularity_baseline(train_pos: pd.DataFrame, item_ids: np.ndarray) -> ScoreFn:
    """Scores every user the same: the item's number of training positives (ties by item order)."""
    counts = train_pos["item_id"].value_counts()
    item_scores = counts.reindex(np.asarray(item_ids)).fillna(0).to_numpy(np.float64)

    def score(user_ids: np.ndarray) -> np.ndarray:
        return np.tile(item_scores, (len(user_ids), 1))

    return score


def popular_item_ids(train_pos: pd.DataFrame, n: int | None = None) -> np.ndarray:
    """Item ids by number of training positives, most popular first (ties: smaller id first)."""
    counts = train_pos.groupby("item_id").size().reset_index(name="n")
    ordered = counts.sort_values(["n", "item_id"], ascending=[False, True])["item_id"].to_numpy(np.int64)
    return ordered if n is None else ordered[:n]


def rank_metrics(ranked: np.ndarray, relevant: set[int], k: int) -> tuple[float, float]:
    """(recall@k, ndcg@k) of one ranked list of item ids against one non-empty relevant set."""
    hits = np.array([int(i) in relevant for i in ranked[:k]], dtype=bool)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(discounts[: len(hits)][hits].sum())
    idcg = float(discounts[: min(len(relevant), k)].sum())
    return float(hits.sum()) / len(relevant), dcg / idcg


def _rank(scores: np.ndarray, item_ids: np.ndarray, seen: set[int], k: int) -> np.ndarray:
    return item_ids[top_k_indices(scores, k, columns_of(item_ids)(seen) if seen else None)]


def evaluate(
    score_fn: ScoreFn,
    train_pos: Positives | pd.DataFrame,
    test_pos: Positives | pd.DataFrame,
    item_ids: np.ndarray,
    k: int,
    chunk: int = 1024,
) -> dict[str, float]:
    """Mean recall@k and ndcg@k over test users with at least one relevant item not seen in training."""
    if k < 1:
        raise ValueError(f"k is {k}; it must be a positive integer.")
    train_map = positives_by_user(train_pos) if isinstance(train_pos, pd.DataFrame) else train_pos
    test_map = positives_by_user(test_pos) if isinstance(test_pos, pd.DataFrame) else test_pos
    targets = {u: set(items) - set(train_map.get(u, set())) for u, items in test_map.items()}
    users = np.array(sorted(u for u, items in targets.items() if items), dtype=np.int64)
    item_ids = np.asarray(item_ids, np.int64)
    recalls, ndcgs = [], []
    for lo in range(0, len(users), chunk):
        batch = users[lo : lo + chunk]
        for user, row in zip(batch, score_fn(batch), strict=True):
            ranked = _rank(row, item_ids, set(train_map.get(int(user), set())), k)
            recall, ndcg = rank_metrics(ranked, targets[int(user)], k)
            recalls.append(recall)
            ndcgs.append(ndcg)
    if not recalls:
        raise TrainingError("no test user has a relevant item unseen in training: the holdout is unusable.")
    return {f"recall@{k}": float(np.mean(recalls)), f"ndcg@{k}": float(np.mean(ndcgs)), "users": float(len(users))}


def evaluate_side_by_side(
    model_score_fn: ScoreFn, train_pos: pd.DataFrame, test_pos: pd.DataFrame, item_ids: np.ndarray, k: int
) -> dict[str, Any]:
    """``{"model": metrics, "popularity": metrics}`` on the same split, users and candidate items."""
    return {
        "model": evaluate(model_score_fn, train_pos, test_pos, item_ids, k),
        "popularity": evaluate(popularity_baseline(train_pos, item_ids), train_pos, test_pos, item_ids, k),
    }
