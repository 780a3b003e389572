"""Training data: pandas frames -> typed arrays -> ``tf.data`` pipelines (config in, Dataset out)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.errors import TrainingError
from recsys.model.two_tower import ITEM_EMBEDDING, ITEM_FEATURES, ITEM_ID, USER_FEATURES, USER_ID

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemTable:
    """Every candidate item: ids ``[M]`` int64, text embeddings ``[M, H]`` and features ``[M, G]`` float32."""

    item_ids: np.ndarray
    text_embeddings: np.ndarray
    features: np.ndarray


@dataclass(frozen=True)
class Interactions:
    """Positive (user, item) pairs: user ids/features at interaction time and the item's row in ``ItemTable``."""

    user_ids: np.ndarray
    user_features: np.ndarray
    item_rows: np.ndarray


def _require_columns(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TrainingError(f"{what} lacks columns {missing}; it has {list(df.columns)}. Check the feature service.")


def feature_matrix(df: pd.DataFrame, names: list[str], what: str) -> np.ndarray:
    """Columns ``names`` as float32 ``[N, len(names)]``; missing values (no feature row yet) become 0."""
    _require_columns(df, names, what)
    values = df[names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    n_missing = int(np.isnan(values).sum())
    if n_missing:
        log.info("%s: %d missing feature values filled with 0", what, n_missing)
    return np.nan_to_num(values, nan=0.0).astype(np.float32).reshape(len(df), len(names))


def item_table(items_df: pd.DataFrame, item_feature_names: list[str]) -> ItemTable:
    """Stack ``items_df`` (item_id, embedding + features, one row per item) into an ``ItemTable``."""
    _require_columns(items_df, ["item_id", "embedding"], "items_df")
    if items_df.empty:
        raise TrainingError("items_df is empty: encode the item texts (encode_items) before training.")
    if items_df["item_id"].duplicated().any():
        raise TrainingError("items_df has duplicate item_id rows; pass one row per item (its latest embedding).")
    if items_df["embedding"].isna().any():
        raise TrainingError("some items have no text embedding; run encode_items for them before training.")
    dims = {len(e) for e in items_df["embedding"]}
    if len(dims) != 1:
        raise TrainingError(f"item embeddings have mixed sizes {sorted(dims)}: re-encode all items with one model.")
    return ItemTable(
        item_ids=items_df["item_id"].to_numpy(dtype=np.int64),
        text_embeddings=np.stack([np.asarray(e, np.float32) for e in items_df["embedding"]]),
        features=feature_matrix(items_df, item_feature_names, "items_df"),
    )


def interactions(train_df: pd.DataFrame, items: ItemTable, user_feature_names: list[str]) -> Interactions:
    """Positive pairs of ``train_df`` (user_id, item_id + user features) mapped onto rows of ``items``."""
    _require_columns(train_df, ["user_id", "item_id"], "train_df")
    if train_df.empty:
        raise TrainingError("train_df has no positive interactions: widen the training window or check labels.")
    row_of = pd.Series(np.arange(len(items.item_ids)), index=items.item_ids)
    rows = row_of.reindex(train_df["item_id"].to_numpy())
    if rows.isna().any():
        unknown = pd.unique(train_df["item_id"][rows.isna().to_numpy()])[:5].tolist()
        raise TrainingError(
            f"{int(rows.isna().sum())} interactions name items without an embedding (e.g. {unknown}): "
            "encode those items (encode_items) or drop the interactions."
        )
    return Interactions(
        user_ids=train_df["user_id"].to_numpy(dtype=np.int64),
        user_features=feature_matrix(train_df, user_feature_names, "train_df"),
        item_rows=rows.to_numpy(dtype=np.int32),
    )


def training_dataset(pairs: Interactions, items: ItemTable, batch_size: int, seed: int, shuffle: bool = True) -> Any:
    """Batches of the two-tower inputs (no labels: the positive of row i is item i), seeded shuffle."""
    import tensorflow as tf

    item_ids = tf.constant(items.item_ids)
    text = tf.constant(items.text_embeddings)
    features = tf.constant(items.features)

    def gather(batch: dict[str, Any]) -> dict[str, Any]:
        rows = batch.pop("item_row")
        return {
            **batch,
            ITEM_ID: tf.gather(item_ids, rows),
            ITEM_EMBEDDING: tf.gather(text, rows),
            ITEM_FEATURES: tf.gather(features, rows),
        }

    ds = tf.data.Dataset.from_tensor_slices(
        {USER_ID: pairs.user_ids, USER_FEATURES: pairs.user_features, "item_row": pairs.item_rows}
    )
    if shuffle:
        ds = ds.shuffle(len(pairs.user_ids), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def item_dataset(items: ItemTable, batch_size: int) -> Any:
    """Item tower inputs for every item, in ``items`` order (to precompute the item matrix)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices({ITEM_EMBEDDING: items.text_embeddings, ITEM_FEATURES: items.features})
    return ds.batch(batch_size)
