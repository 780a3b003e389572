"""``TrainedModel``: what training returns, before it is exported as a model artifact."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TrainedModel:
    """A trained user tower plus the precomputed item matrix (row i is ``item_ids[i]``): L2-normalised rows, but
    for a last column with the ``popularity_prior`` (``with_popularity_prior``) when that is on."""

    user_tower: Any
    item_tower: Any
    item_ids: np.ndarray
    item_embeddings: np.ndarray
    user_feature_names: list[str]
    item_feature_names: list[str]
    history: list[float] = field(default_factory=list)
    ranking_history: list[float] = field(default_factory=list)  # mean ranking BCE per epoch (ranking loss on)
    history_length: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0
    examples: int = 0
