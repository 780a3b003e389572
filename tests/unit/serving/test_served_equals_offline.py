"""The served top k equals the offline top k, bit for bit, for a really trained model over a real Feast store.

A small two-tower model is trained (``recsys.model.fit.train``) on planted data with history (the user tower
reads each user's recent items), exported, and served by ``start_runtime`` over a Feast SQLite store that every
user's features and recent items were materialized into. For every user the service's answer
(``runtime.recommend``) must equal the offline scorer's (``model_scorer`` scores + ``top_k_indices`` without the
same recent items): same items in the same order, same scores. The lean online reader must also answer exactly
what ``get_online_features`` answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from planted import planted_items
from recsys.artifact import ModelArtifact, load_artifact
from recsys.config import ModelSettings, Settings
from recsys.model.data import recent_items_by_user
from recsys.model.export import export_artifact
from recsys.model.fit import train
from recsys.model.inference import model_scorer
from recsys.model.trained import TrainedModel
from recsys.scoring import columns_of, top_k_indices
from recsys.serving.online import FeastSdkRows, SqliteRows, open_online_rows
from recsys.serving.testing import EXAMPLE_FEATURE_NAMES, materialize_example_users

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:fetch_arrow_table:DeprecationWarning")]

FEATURES = list(EXAMPLE_FEATURE_NAMES)  # the user_stats view's fields, in the tower's order
SERVICE = "recommender_v1_user"
USERS = list(range(1, 25))  # 1-12 like topic A (items 100-109), 13-24 topic B (items 110-119)
NO_STORED_HISTORY = {6, 18}  # known users whose online row has no recent items
UNKNOWN_USER = 999  # in the store, not in the model: served from popularity
HISTORY = 5
K = 8
CFG = ModelSettings(
    embedding_dim=8,
    epochs=8,
    batch_size=32,
    learning_rate=0.05,
    temperature=0.1,
    seed=5,
    history_length=HISTORY,
    history_id_dim=4,
)
METADATA = {
    "metrics": {"model": {"recall@5": 1.0}, "popularity": {"recall@5": 0.5}},
    "data_interval_start": "2024-01-01T00:00:00+00:00",
    "data_interval_end": "2024-01-08T00:00:00+00:00",
    "feature_service": SERVICE,
    "dataset_fingerprint": "planted",
    "code_version": "test",
    "bert_checkpoint": "none",
}


def _user_features(user: int) -> list[float]:
    """Integer counts (the store keeps them as Int64) and a ctr, distinct per user."""
    impressions, clicks = 20 + 3 * user, user % 7
    return [float(impressions), float(clicks), clicks / impressions]


def _interactions() -> pd.DataFrame:
    """7 positives per user on their topic, an hour apart; the user's features on every row."""
    rng = np.random.default_rng(1)
    rows = []
    for user in USERS:
        base = 100 if user <= 12 else 110
        for n, item in enumerate(rng.choice(10, size=7, replace=False)):
            stamp = pd.Timestamp("2024-01-02", tz="UTC") + pd.Timedelta(hours=n)
            rows.append((user, base + int(item), stamp, *_user_features(user)))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp", *FEATURES])


@dataclass(frozen=True)
class Served:
    settings: Settings
    artifact: ModelArtifact
    runtime: Any
    features: pd.DataFrame  # indexed by user_id, FEATURES columns
    recent: dict[int, list[int]]  # what the store holds, newest first


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    return train(_interactions(), planted_items(), FEATURES, ["item_clicks_28d"], CFG)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, trained: TrainedModel) -> Iterator[Served]:
    from recsys.serving.startup import start_runtime

    home = tmp_path_factory.mktemp("served")
    positives = _interactions()
    popular = positives["item_id"].value_counts(sort=True).index.to_numpy(np.int64)
    directory = export_artifact(trained, home / "artifact", popular, METADATA)
    by_user = recent_items_by_user(positives, HISTORY + 2)  # longer than the tower reads: it truncates
    recent = {u: ([] if u in NO_STORED_HISTORY else by_user[u]) for u in USERS}
    recent[UNKNOWN_USER] = [101, 102]
    features = {u: _user_features(u) for u in [*USERS, UNKNOWN_USER]}

    settings = Settings(home=home / "home")
    materialize_example_users(settings, {u: (features[u], recent[u]) for u in features}, day="2024-01-07")
    runtime = start_runtime(settings, Path(directory), "planted-v1")
    assert runtime.binding.problems == []
    frame = pd.DataFrame.from_dict(features, orient="index", columns=FEATURES).rename_axis("user_id")
    yield Served(settings, load_artifact(directory), runtime, frame, recent)
    if runtime.rows is not None:
        runtime.rows.close()


def _offline_top_k(served: Served, users: list[int], k: int) -> list[tuple[list[int], list[float]]]:
    """The offline path: model_scorer over the same features and recent items, top k without the seen ones."""
    artifact = served.artifact
    scores = model_scorer(artifact, served.features, served.recent)(np.asarray(users, np.int64))
    cols = columns_of(artifact.item_ids)
    out = []
    for row, user in zip(scores, users, strict=True):
        top = top_k_indices(row, k, cols(served.recent[user]))
        out.append(([int(i) for i in artifact.item_ids[top]], [float(s) for s in row[top]]))
    return out


def test_served_top_k_equals_the_offline_top_k_for_every_user(served: Served) -> None:
    assert isinstance(served.runtime.rows, SqliteRows)  # the lean reader, not the SDK
    offline = _offline_top_k(served, USERS, K)
    for user, (items, scores) in zip(USERS, offline, strict=True):
        answer = served.runtime.recommend(user, K)
        assert (answer.fallback, answer.degraded, answer.model_version) == (False, False, "planted-v1"), user
        assert answer.item_ids == items, user
        assert answer.scores == scores, user  # exact: the same float32 values
        assert not set(answer.item_ids) & set(served.recent[user]), user
        assert len(items) == K


def test_batched_answers_equal_the_single_ones(served: Served) -> None:
    from recsys.serving.runtime import RecommendRequest

    batch = served.runtime.recommend_batch([RecommendRequest(u, K) for u in USERS])
    single = [served.runtime.recommend(u, K) for u in USERS]
    assert [(a.item_ids, a.scores) for a in batch] == [(a.item_ids, a.scores) for a in single]


def test_the_stored_history_moves_the_answer(served: Served) -> None:
    """Recent items are a tower input here: without them (and without excluding them) the scores differ."""
    recommender = served.runtime.recommender
    user = next(u for u in USERS if served.recent[u])
    features = served.features.loc[user].tolist()
    with_history = recommender.score(user, recommender.item_ids.tolist(), features, served.recent[user])
    without = recommender.score(user, recommender.item_ids.tolist(), features, [])
    assert with_history is not None and without is not None
    assert not np.allclose(with_history, without)
    assert served.runtime.recommend(user, K, exclude_seen=False).item_ids != served.runtime.recommend(user, K).item_ids


def test_planted_topics_are_recovered(served: Served) -> None:
    """A sanity check that the model learned something: most of each user's top k is on the user's topic."""
    on_topic = [np.mean([(i < 110) == (u <= 12) for i in served.runtime.recommend(u, 3).item_ids]) for u in USERS]
    assert np.mean(on_topic) >= 0.8, on_topic


def test_an_unknown_user_in_the_store_gets_popular_items(served: Served) -> None:
    answer = served.runtime.recommend(UNKNOWN_USER, K)
    popular = [int(i) for i in served.artifact.popular_item_ids if int(i) not in served.recent[UNKNOWN_USER]]
    assert answer.fallback and not answer.degraded and answer.item_ids == popular[:K]


def test_the_lean_reader_equals_get_online_features_for_every_user(served: Served) -> None:
    users = [*USERS, UNKNOWN_USER, 12345]  # 12345: in neither the store nor the model
    lean = open_online_rows(served.settings, SERVICE, FEATURES)
    sdk = open_online_rows(served.settings, SERVICE, FEATURES, sdk=True)
    assert isinstance(lean, SqliteRows) and isinstance(sdk, FeastSdkRows)
    try:
        lean_rows, sdk_rows = lean.read(users), sdk.read(users)
    finally:
        lean.close()
    assert lean_rows == sdk_rows
    for user, row in zip(users[:-1], lean_rows, strict=False):
        assert row.features == pytest.approx(served.features.loc[user].tolist()), user
        assert row.recent_items == served.recent[user], user
    assert lean_rows[-1].features is None and lean_rows[-1].recent_items == []
