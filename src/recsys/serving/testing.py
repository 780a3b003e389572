"""A tiny, real model artifact with known weights, for tests, smoke checks and demos of the serving path.

The artifact has every file the contract names (a real Keras 3 user tower with ``IntegerLookup`` +
``Embedding`` + ``Dense`` + L2 normalisation, item matrix, ids, popularity, manifest) and keeps its weights,
so a test can compute the expected user vector and ranking with numpy alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.artifact import read_manifest, write_artifact

EXAMPLE_FEATURE_NAMES = ["user_impressions_28d", "user_clicks_28d", "user_ctr_28d"]


@dataclass(frozen=True)
class ExampleArtifact:
    """Where the artifact was written and the numbers inside it."""

    directory: Path
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_embeddings: np.ndarray
    popular_item_ids: np.ndarray
    user_embedding: np.ndarray  # [len(user_ids) + 1, e]; row 0 is the out-of-vocabulary bucket
    dense_kernel: np.ndarray  # [e + F, d]
    dense_bias: np.ndarray  # [d]
    manifest: dict[str, Any]

    def expected_user_vector(self, user_id: int, user_features: list[float]) -> np.ndarray:
        """The tower's output for one user, computed with numpy from the stored weights."""
        matches = np.flatnonzero(self.user_ids == user_id)
        row = int(matches[0]) + 1 if matches.size else 0
        x = np.concatenate([self.user_embedding[row], np.asarray(user_features, dtype=np.float32)])
        y = x @ self.dense_kernel + self.dense_bias
        return np.asarray(y / np.linalg.norm(y), dtype=np.float32)

    def expected_ranking(self, user_id: int, user_features: list[float]) -> list[int]:
        """Item ids by descending dot product with the expected user vector."""
        scores = self.item_embeddings @ self.expected_user_vector(user_id, user_features)
        return [int(i) for i in self.item_ids[np.argsort(-scores, kind="stable")]]


def _normalise(rows: np.ndarray) -> np.ndarray:
    return np.asarray(rows / np.linalg.norm(rows, axis=1, keepdims=True), dtype=np.float32)


def _user_tower(user_ids: np.ndarray, n_features: int, emb_dim: int, out_dim: int) -> Any:
    import keras

    user_id = keras.Input(shape=(), dtype="int64", name="user_id")
    features = keras.Input(shape=(n_features,), dtype="float32", name="user_features")
    index = keras.layers.IntegerLookup(vocabulary=user_ids, num_oov_indices=1, name="user_lookup")(user_id)
    embedded = keras.layers.Embedding(len(user_ids) + 1, emb_dim, name="user_embedding")(index)
    joined = keras.layers.Concatenate(name="user_concat")([embedded, features])
    dense = keras.layers.Dense(out_dim, name="user_dense")(joined)
    output = keras.layers.UnitNormalization(axis=-1, name="user_l2")(dense)
    return keras.Model(inputs={"user_id": user_id, "user_features": features}, outputs=output, name="user_tower")


def write_example_artifact(
    directory: Path,
    *,
    n_users: int = 5,
    n_items: int = 12,
    emb_dim: int = 4,
    out_dim: int = 8,
    seed: int = 0,
    model_version: str | None = None,
) -> ExampleArtifact:
    """Write a tiny artifact (user ids 101.., item ids 1001..) into ``directory`` and return its numbers."""
    rng = np.random.default_rng(seed)
    n_features = len(EXAMPLE_FEATURE_NAMES)
    user_ids = np.arange(101, 101 + n_users, dtype=np.int64)
    item_ids = np.arange(1001, 1001 + n_items, dtype=np.int64)
    item_embeddings = _normalise(rng.normal(size=(n_items, out_dim)))
    popular_item_ids = rng.permutation(item_ids).astype(np.int64)
    user_embedding = rng.normal(size=(n_users + 1, emb_dim)).astype(np.float32)
    kernel = rng.normal(size=(emb_dim + n_features, out_dim)).astype(np.float32)
    bias = rng.normal(scale=0.1, size=(out_dim,)).astype(np.float32)

    tower = _user_tower(user_ids, n_features, emb_dim, out_dim)
    tower.get_layer("user_embedding").set_weights([user_embedding])
    tower.get_layer("user_dense").set_weights([kernel, bias])
    write_artifact(directory, tower, item_ids, item_embeddings, popular_item_ids, _manifest(model_version))
    manifest = read_manifest(directory)
    return ExampleArtifact(
        directory, user_ids, item_ids, item_embeddings, popular_item_ids, user_embedding, kernel, bias, manifest
    )


def _manifest(model_version: str | None) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "metrics": {"model": {"recall_at_10": 0.5}, "popularity": {"recall_at_10": 0.2}},
        "data_interval_start": "2024-01-01T00:00:00+00:00",
        "data_interval_end": "2024-01-08T00:00:00+00:00",
        "feature_service": "recommender_v1_user",
        "user_feature_names": list(EXAMPLE_FEATURE_NAMES),
        "dataset_fingerprint": "example",
        "code_version": "example",
        "bert_checkpoint": "none",
    }
    if model_version:
        manifest["model_version"] = model_version
    return manifest


def materialize_example_users(
    settings: Any,
    rows: dict[int, tuple[list[float], list[int]]],
    day: str = "2024-01-07",
) -> None:
    """Write user marts for ``rows`` ({user_id: (EXAMPLE_FEATURE_NAMES values, recent items newest first)})
    stamped at the end of ``day``, then apply the feature repo and materialize the user views into
    ``settings``' online store: a real Feast store for the example artifact (its data interval ends 2024-01-08).
    """
    from datetime import UTC, date, datetime, timedelta

    import pyarrow as pa
    import pyarrow.parquet as pq

    from recsys.features.store import apply, materialize

    feature_day = date.fromisoformat(day)
    stamp = datetime(feature_day.year, feature_day.month, feature_day.day, tzinfo=UTC) + timedelta(days=1)
    users = sorted(rows)
    ts = pa.timestamp("us", tz="UTC")
    marts = settings.marts
    marts.mkdir(parents=True, exist_ok=True)
    stats = {
        "user_id": pa.array(users, pa.int64()),
        "feature_date": pa.array([feature_day] * len(users), pa.date32()),
        "event_timestamp": pa.array([stamp] * len(users), ts),
        "user_impressions_28d": pa.array([int(rows[u][0][0]) for u in users], pa.int64()),
        "user_clicks_28d": pa.array([int(rows[u][0][1]) for u in users], pa.int64()),
        "user_ctr_28d": pa.array([float(rows[u][0][2]) for u in users], pa.float64()),
    }
    pq.write_table(pa.table(stats), marts / "user_daily_features.parquet")
    recent = {
        "user_id": pa.array(users, pa.int64()),
        "feature_date": pa.array([feature_day] * len(users), pa.date32()),
        "event_timestamp": pa.array([stamp] * len(users), ts),
        "recent_item_ids": pa.array([rows[u][1] for u in users], pa.list_(pa.int64())),
    }
    pq.write_table(pa.table(recent), marts / "user_recent_items.parquet")
    apply(settings)
    start = stamp - timedelta(days=30)
    materialize(settings, start, stamp, ["user_stats", "user_recent_items"], chunk=timedelta(days=31))
