"""The stage tests' run folder: a training set over the example artifact's users and items (``from run_fixtures
import ...``; the fixtures are in this folder's conftest)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.config import Settings
from recsys.features.training_set import ITEM_FEATURES, USER_FEATURES, TrainingData
from recsys.serving.testing import ExampleArtifact

START = datetime(2024, 1, 1, tzinfo=UTC)  # the run's interval [START, START + 7 days)
HOLDOUT_START = START + timedelta(days=6)  # model.holdout_days = 1: the last day is the holdout
COLD_ITEM = 1012  # no training positive: the holdout's positive on it is the cold-start slice


@dataclass(frozen=True)
class Run:
    """A run folder of the interval starting ``START``: its training set and the example artifact."""

    settings: Settings
    folder: Path
    data: TrainingData
    artifact: ExampleArtifact


def example_training_set(users: np.ndarray, items: np.ndarray, seed: int = 0) -> TrainingData:
    """Four training positives a day per user over the interval's first six days (on every item but the cold
    one) and two holdout positives per user on the last day (one on the cold item for user 101)."""
    rng = np.random.default_rng(seed)
    warm = items[items != COLD_ITEM]
    rows = [
        (int(u), int(rng.choice(warm)), START + timedelta(days=d, hours=h))
        for u in users
        for d in range(6)
        for h in (1, 5, 9, 13)
    ]
    cols = ["user_id", "item_id", "event_timestamp"]
    train = pd.DataFrame(rows, columns=cols)
    train[USER_FEATURES] = 1.0
    held = [(int(u), int(rng.choice(warm)), HOLDOUT_START + timedelta(hours=h)) for u in users for h in (2, 3)]
    held.append((int(users[0]), COLD_ITEM, HOLDOUT_START + timedelta(hours=4)))
    test = pd.DataFrame(held, columns=cols)
    features = pd.DataFrame(
        rng.random((len(users), len(USER_FEATURES))), index=pd.Index(users, name="user_id"), columns=USER_FEATURES
    )
    catalog = pd.DataFrame({"item_id": items, "embedding": list(rng.random((len(items), 4), dtype=np.float32))})
    catalog[ITEM_FEATURES] = 0.0
    return TrainingData(train, test, features, catalog, HOLDOUT_START, list(USER_FEATURES), list(ITEM_FEATURES))
