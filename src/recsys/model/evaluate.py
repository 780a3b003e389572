"""Offline evaluation of the pipeline and the promotion gate: a time split, recall/ndcg@k, popularity.

* ``temporal_split``: rows before the holdout start train, the rest test (never random).
* ``user_metrics``: recall, ndcg and mrr@k per user (the one metric implementation: the pipeline, the gate
  and the benchmarks' protocol all use it).
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
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from recsys import lake
from recsys.errors import TrainingError
from recsys.scoring import top_k_rows

ScoreFn = Callable[[np.ndarray], np.ndarray]
"""user ids ``[U]`` -> scores ``[U, n_items]``, columns in the order of the evaluated ``item_ids``."""

Positives = Mapping[int, set[int]]
"""``{user_id: {item_id, ...}}``: each user's positive items."""


def temporal_split(
    interactions: pd.DataFrame, holdout_start: datetime | pd.Timestamp, column: str = "event_timestamp"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows before ``holdout_start`` (train) and from it on (test); naive times are taken as UTC."""
    if column not in interactions.columns:
        raise TrainingError(f"interactions lack the time column {column!r}; the split is by time, never random.")
    times = pd.to_datetime(interactions[column], utc=True)  # naive times are taken as UTC
    is_test = (times >= pd.Timestamp(lake.utc(holdout_start))).to_numpy()
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


@dataclass
class UserMetrics:
    """Per-user metrics of one model on one evaluation set (arrays aligned with ``users``)."""

    users: np.ndarray
    recall: np.ndarray
    ndcg: np.ndarray
    mrr: np.ndarray
    recommended: set[int] = field(default_factory=set)
    n_candidates: int = 0

    @property
    def coverage(self) -> float:
        """Share of the candidate items that appear in at least one user's top k."""
        return len(self.recommended) / max(self.n_candidates, 1)


def evaluation_users(fit_map: Positives, target_map: Positives, candidates: np.ndarray | None = None) -> np.ndarray:
    """Users with at least one fit positive and one relevant target (unseen in fit, among the candidates)."""
    allowed = None if candidates is None else set(np.asarray(candidates).tolist())

    def has_target(user: int, items: set[int]) -> bool:
        relevant = set(items) - set(fit_map[user])
        return bool(relevant if allowed is None else relevant & allowed)

    users = [u for u, items in target_map.items() if fit_map.get(u) and has_target(u, items)]
    return np.array(sorted(users), dtype=np.int64)


def user_metrics(
    score_fn: ScoreFn,
    fit_pos: Positives | pd.DataFrame,
    target_pos: Positives | pd.DataFrame,
    item_ids: np.ndarray,
    k: int,
    users: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
    chunk: int = 512,
) -> UserMetrics:
    """recall@k, ndcg@k and mrr@k per user; ``candidates`` (item ids) restricts the ranked items."""
    fit_map = positives_by_user(fit_pos) if isinstance(fit_pos, pd.DataFrame) else fit_pos
    target_map = positives_by_user(target_pos) if isinstance(target_pos, pd.DataFrame) else target_pos
    item_ids = np.asarray(item_ids, np.int64)
    cols = np.arange(len(item_ids)) if candidates is None else np.flatnonzero(np.isin(item_ids, candidates))
    cand_ids = item_ids[cols]
    col_of = pd.Series(np.arange(len(cand_ids)), index=cand_ids)
    allowed = set(cand_ids.tolist())
    users = evaluation_users(fit_map, target_map, cand_ids) if users is None else np.asarray(users, np.int64)
    recall, ndcg, mrr, recommended = [], [], [], set()
    for lo in range(0, len(users), chunk):
        batch = users[lo : lo + chunk]
        scores = np.asarray(score_fn(batch))[:, cols]
        seen = [col_of.reindex(list(fit_map.get(int(u), ()))).dropna().to_numpy(np.int64) for u in batch]
        top = top_k_rows(scores, seen, k)
        for user, row in zip(batch, top, strict=True):
            ranked = cand_ids[row[row >= 0]]
            recommended.update(ranked.tolist())
            relevant = (set(target_map.get(int(user), ())) - set(fit_map.get(int(user), ()))) & allowed
            user_recall, user_ndcg = rank_metrics(ranked, relevant, k) if relevant else (0.0, 0.0)
            hits = np.isin(ranked, list(relevant))
            recall.append(user_recall)
            ndcg.append(user_ndcg)
            mrr.append(1.0 / (np.argmax(hits) + 1) if hits.any() else 0.0)
    return UserMetrics(users, np.array(recall), np.array(ndcg), np.array(mrr), recommended, len(cand_ids))


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
    users = np.array(sorted(u for u, items in test_map.items() if set(items) - set(train_map.get(u, set()))))
    if not len(users):
        raise TrainingError("no test user has a relevant item unseen in training: the holdout is unusable.")
    per_user = user_metrics(score_fn, train_map, test_map, item_ids, k, users=users.astype(np.int64), chunk=chunk)
    return {
        f"recall@{k}": float(np.mean(per_user.recall)),
        f"ndcg@{k}": float(np.mean(per_user.ndcg)),
        "users": float(len(users)),
    }


def evaluate_side_by_side(
    model_score_fn: ScoreFn, train_pos: pd.DataFrame, test_pos: pd.DataFrame, item_ids: np.ndarray, k: int
) -> dict[str, Any]:
    """``{"model": metrics, "popularity": metrics}`` on the same split, users and candidate items."""
    return {
        "model": evaluate(model_score_fn, train_pos, test_pos, item_ids, k),
        "popularity": evaluate(popularity_baseline(train_pos, item_ids), train_pos, test_pos, item_ids, k),
    }
