"""Recommendations and evaluation score functions from a trained model or a loaded artifact.

Thin conveniences over ``recsys.scoring`` (the one scoring path of evaluation, the promotion gate and the
service); an artifact is loaded with ``recsys.artifact.load_artifact``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsys.artifact import RECENT_ITEM_IDS, ModelArtifact
from recsys.scoring import Ranked, Scorer, columns_of, top_k_indices

if TYPE_CHECKING:
    from recsys.model.trained import TrainedModel


def holdout_recent_items(
    test_user_features: pd.DataFrame, train: pd.DataFrame, length: int = 10
) -> dict[int, list[int]]:
    """Each holdout user's recent items as of the holdout start, newest first (at most ``length``).

    From the feature store's ``recent_item_ids`` column of ``test_user_features`` (what serving reads);
    training sets saved without it fall back to the user's last positives in ``train``.
    """
    from recsys.model.data import recent_items_by_user

    if RECENT_ITEM_IDS in test_user_features.columns:
        lists = test_user_features[RECENT_ITEM_IDS]
        return {int(u): [int(i) for i in v][:length] for u, v in lists.items() if v is not None and len(v)}
    return recent_items_by_user(train[["user_id", "item_id", "event_timestamp"]], length)


def top_k(scores: np.ndarray, item_ids: np.ndarray, k: int, exclude: set[int] | None = None) -> Ranked:
    """The ``k`` best-scored items of one score row, skipping ``exclude``; ties keep item order."""
    item_ids = np.asarray(item_ids, np.int64)
    cols = top_k_indices(scores, k, columns_of(item_ids)(exclude) if exclude else None)
    return Ranked(item_ids[cols], np.asarray(scores, np.float32)[cols])


def recommend(
    artifact: ModelArtifact | TrainedModel,
    user_ids: Sequence[int] | np.ndarray,
    user_features: np.ndarray,
    k: int,
    exclude: Mapping[int, set[int]] | None = None,
    recent_item_ids: Sequence[Any] | None = None,
) -> list[Ranked]:
    """Top-``k`` items per user (``Scorer.rank``); ``exclude[user_id]`` items are skipped."""
    exclude = exclude or {}
    skips = [exclude.get(int(u)) for u in user_ids]
    return Scorer(artifact).rank(user_ids, user_features, k, recent_item_ids, skips)


def latest_user_features(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Each user's most recent feature values in ``frame`` (by ``event_timestamp``), indexed by user_id."""
    latest = frame.sort_values("event_timestamp").drop_duplicates("user_id", keep="last")
    return latest.set_index("user_id")[list(names)]


def model_scorer(
    trained: TrainedModel | ModelArtifact,
    features_by_user: pd.DataFrame,
    recent_items: Mapping[int, Sequence[int]] | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """A score function for ``evaluate``: user ids ``[U]`` -> scores ``[U, n_items]`` in item_ids order.

    ``features_by_user`` is indexed by user_id with the user feature columns in tower order; users
    without a row get 0 for every feature (as at training for a missing feature row). Recent items come
    from ``recent_items`` (``{user_id: [item ids, newest first]}``, e.g. ``data.recent_items_by_user``) or
    else a ``recent_item_ids`` column of ``features_by_user``; a user with neither has no history.
    """
    frame = features_by_user
    if recent_items is None and RECENT_ITEM_IDS in frame.columns:
        recent_items = {int(u): v for u, v in frame[RECENT_ITEM_IDS].items() if v is not None}
    frame = frame.drop(columns=[RECENT_ITEM_IDS], errors="ignore")
    history = recent_items or {}
    scorer = Scorer(trained)

    def score(user_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(user_ids, np.int64)
        feats = frame.reindex(ids).fillna(0.0).to_numpy(np.float32)
        lists = [history.get(int(u)) for u in ids]
        return scorer.scores(scorer.user_vectors(ids, feats, lists))

    return score


def holdout_scorer(
    trained: TrainedModel | ModelArtifact, test_user_features: pd.DataFrame, train: pd.DataFrame
) -> Callable[[np.ndarray], np.ndarray]:
    """The score function of a holdout: the users' features and recent items as of the holdout start.

    The evaluation stage and the promotion gate both score a model this way, so they rank alike.
    """
    return model_scorer(trained, test_user_features, holdout_recent_items(test_user_features, train))
