"""Training data: pandas frames -> typed arrays -> ``tf.data`` pipelines (config in, Dataset out).

Ids become row indices here, outside the TensorFlow graph (so the training step has no hash tables and
can be XLA-compiled): ``index_of(vocabulary, ids)`` maps ``vocabulary[i]`` to ``i + 1`` and anything
else to 0, exactly as the exported towers' ``IntegerLookup(vocabulary, num_oov_indices=1)`` layers do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recsys.artifact import PAD_ITEM_ID, RECENT_ITEM_IDS, USER_FEATURES, pad_recent
from recsys.errors import TrainingError
from recsys.model.two_tower import ITEM_ROW, RANK_LABEL, RANK_PREFIX, RECENT_ROWS, USER_INDEX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemTable:
    """Every candidate item: ids ``[M]`` int64, text embeddings ``[M, H]`` and features ``[M, G]`` float32."""

    item_ids: np.ndarray
    text_embeddings: np.ndarray
    features: np.ndarray
    texts: list[str] | None = None


@dataclass(frozen=True)
class Interactions:
    """Positive (user, item) pairs: user ids/features/recent items at interaction time, the item's table row."""

    user_ids: np.ndarray
    user_features: np.ndarray
    item_rows: np.ndarray
    recent_item_ids: np.ndarray  # int64 [N, R], newest first, padded with PAD_ITEM_ID


@dataclass(frozen=True)
class LabelledImpressions:
    """Impressions for the ranking loss: user inputs at impression time, the impressed item's row, 0/1 labels."""

    pairs: Interactions
    labels: np.ndarray  # float32 [N]


def _require_columns(df: pd.DataFrame, columns: list[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TrainingError(f"{what} lacks columns {missing}; it has {list(df.columns)}. Check the feature service.")


def index_of(vocabulary: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``vocabulary[i] -> i + 1``, anything else -> 0 (int32, same shape as ``ids``), like IntegerLookup."""
    vocab = np.asarray(vocabulary, np.int64)
    ids = np.asarray(ids, np.int64)
    if len(vocab) == 0:
        return np.zeros(ids.shape, np.int32)
    order = np.argsort(vocab, kind="stable")
    sorted_vocab = vocab[order]
    pos = np.clip(np.searchsorted(sorted_vocab, ids), 0, len(vocab) - 1)
    found = sorted_vocab[pos] == ids
    return np.where(found, order[pos] + 1, 0).astype(np.int32)


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
    texts = items_df["text"].fillna("").astype(str).tolist() if "text" in items_df.columns else None
    return ItemTable(
        item_ids=items_df["item_id"].to_numpy(dtype=np.int64),
        text_embeddings=np.stack([np.asarray(e, np.float32) for e in items_df["embedding"]]),
        features=feature_matrix(items_df, item_feature_names, "items_df"),
        texts=texts,
    )


def recent_before_each(train_df: pd.DataFrame, length: int) -> np.ndarray:
    """For each row, the same user's positives strictly earlier in time (newest first), ``[N, length]``.

    Rows of one user at the same timestamp do not see each other (point in time: ``occurred_at < T``).
    """
    return recent_positives_before(train_df, train_df, length)


def recent_items_by_user(positives: pd.DataFrame, length: int) -> dict[int, list[int]]:
    """Each user's last ``length`` positives of ``positives`` (user_id, item_id, event_timestamp), newest first."""
    _require_columns(positives, ["user_id", "item_id", "event_timestamp"], "positives")
    frame = positives.assign(_t=pd.to_datetime(positives["event_timestamp"], utc=True), _p=np.arange(len(positives)))
    frame = frame.sort_values(["user_id", "_t", "_p"], ascending=[True, False, False], kind="stable")
    newest = frame.groupby("user_id", sort=False).head(length)
    return {int(u): [int(i) for i in g] for u, g in newest.groupby("user_id", sort=False)["item_id"]}


def _utc_datetimes(values: pd.Series) -> np.ndarray:
    """UTC times as naive ``datetime64[ns]`` (tz-aware columns turn into slow object arrays otherwise)."""
    return pd.to_datetime(values, utc=True).dt.tz_localize(None).to_numpy("datetime64[ns]")


def recent_positives_before(positives: pd.DataFrame, queries: pd.DataFrame, length: int) -> np.ndarray:
    """For each ``queries`` row (user_id, event_timestamp), the user's ``positives`` strictly earlier, newest first.

    ``[len(queries), length]`` int64 padded with ``PAD_ITEM_ID``; positives at the query's own timestamp
    are not seen (point in time: ``occurred_at < T``); among one user's positives at one timestamp, the later
    row counts as newer.
    """
    _require_columns(positives, ["user_id", "item_id", "event_timestamp"], "positives")
    _require_columns(queries, ["user_id", "event_timestamp"], "queries")
    out = np.full((len(queries), length), PAD_ITEM_ID, np.int64)
    if length == 0 or queries.empty or positives.empty:
        return out
    pos = positives.assign(_t=_utc_datetimes(positives["event_timestamp"]), _p=np.arange(len(positives)))
    pos = pos.sort_values(["user_id", "_t", "_p"], kind="stable")
    by_user = {int(u): (g["_t"].to_numpy(), g["item_id"].to_numpy(np.int64)) for u, g in pos.groupby("user_id")}
    asked_at = _utc_datetimes(queries["event_timestamp"])
    for user, rows in pd.DataFrame({"u": queries["user_id"].to_numpy(np.int64)}).groupby("u").indices.items():
        if (found := by_user.get(int(user))) is None:
            continue
        times, items = found
        cuts = np.searchsorted(times, asked_at[rows], side="left")  # one search per user
        for row, cut in zip(rows, cuts, strict=True):
            earlier = items[max(0, cut - length) : cut][::-1]
            out[row, : len(earlier)] = earlier
    return out


def interactions(
    train_df: pd.DataFrame, items: ItemTable, user_feature_names: list[str], history_length: int = 0
) -> Interactions:
    """Positive pairs of ``train_df`` mapped onto rows of ``items``, with each row's recent items.

    Recent items come from a ``recent_item_ids`` column when present (point-in-time lists, e.g. from the
    Feast ``user_recent_items`` view), else from ``train_df`` itself (the user's earlier positives).
    """
    _require_columns(train_df, ["user_id", "item_id"], "train_df")
    if train_df.empty:
        raise TrainingError("train_df has no positive interactions: widen the training window or check labels.")
    rows = index_of(items.item_ids, train_df["item_id"].to_numpy()) - 1
    if (rows < 0).any():
        unknown = pd.unique(train_df["item_id"].to_numpy()[rows < 0])[:5].tolist()
        raise TrainingError(
            f"{int((rows < 0).sum())} interactions name items without an embedding (e.g. {unknown}): "
            "encode those items (encode_items) or drop the interactions."
        )
    if RECENT_ITEM_IDS in train_df.columns:
        recent = pad_recent(train_df[RECENT_ITEM_IDS].tolist(), history_length)
    else:
        recent = recent_before_each(train_df, history_length) if history_length else np.zeros((len(train_df), 0))
    return Interactions(
        user_ids=train_df["user_id"].to_numpy(dtype=np.int64),
        user_features=feature_matrix(train_df, user_feature_names, "train_df"),
        item_rows=rows.astype(np.int32),
        recent_item_ids=recent.astype(np.int64),
    )


def labelled_impressions(
    impressions_df: pd.DataFrame,
    items: ItemTable,
    user_feature_names: list[str],
    history_length: int = 0,
    positives_df: pd.DataFrame | None = None,
) -> LabelledImpressions:
    """Labelled impressions (user_id, item_id, label 0/1 + user features as of the impression) for the ranking loss.

    Impressions of items outside ``items`` are dropped (logged). Recent items come from a ``recent_item_ids``
    column when present, else from ``positives_df`` (the user's positives strictly before each impression).
    """
    _require_columns(impressions_df, ["user_id", "item_id", "label"], "impressions_df")
    labels = pd.to_numeric(impressions_df["label"], errors="coerce").to_numpy(np.float64)
    if not np.isin(labels, (0.0, 1.0)).all():
        raise TrainingError("impressions_df label must be 0 or 1 per row: label impressions with label_impressions.")
    known = index_of(items.item_ids, impressions_df["item_id"].to_numpy()) > 0
    if not known.all():
        log.warning("ranking loss: dropped %d impressions of items without an embedding", int((~known).sum()))
    frame = impressions_df[known].reset_index(drop=True)
    if frame.empty:
        raise TrainingError(
            "no labelled impressions of catalog items: check the training window, or set model.ranking_loss_weight 0."
        )
    if history_length and RECENT_ITEM_IDS not in frame.columns:
        _require_columns(frame, ["event_timestamp"], "impressions_df")
        history = positives_df if positives_df is not None else frame.iloc[:0]
        frame = frame.assign(**{RECENT_ITEM_IDS: list(recent_positives_before(history, frame, history_length))})
    return LabelledImpressions(
        interactions(frame, items, user_feature_names, history_length), labels[known].astype(np.float32)
    )


def ranking_arrays(
    impressions: LabelledImpressions, user_vocabulary: np.ndarray, item_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """The ranking part of the training inputs: ``training_arrays`` of the impressions, keys ``rank_*``."""
    arrays = training_arrays(impressions.pairs, user_vocabulary, item_ids)
    return {**{RANK_PREFIX + k: v for k, v in arrays.items()}, RANK_LABEL: impressions.labels}


def training_arrays(pairs: Interactions, user_vocabulary: np.ndarray, item_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The training model's inputs: user index, features, recent item rows (0 = padding), positive's row."""
    arrays = {
        USER_INDEX: index_of(user_vocabulary, pairs.user_ids),
        USER_FEATURES: pairs.user_features,
        ITEM_ROW: pairs.item_rows,
    }
    if pairs.recent_item_ids.shape[1]:
        arrays[RECENT_ROWS] = index_of(item_ids, pairs.recent_item_ids)
    return arrays


def training_dataset(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    ranking: Mapping[str, np.ndarray] | None = None,
) -> Any:
    """Batches of the training model's inputs (no labels: the loss reads ``item_row``), seeded shuffle.

    ``drop_remainder`` keeps every batch the same shape (one XLA compilation; MirroredStrategy splits evenly)
    when there is more than one batch. ``ranking`` (``ranking_arrays``): labelled impressions, shuffled and
    repeated, merged into each batch with as many rows as its positives (one batch dimension for every key,
    as MirroredStrategy's per-replica split needs); an epoch is still one pass over the positives.
    """
    import tensorflow as tf

    n = len(next(iter(arrays.values())))
    ds = tf.data.Dataset.from_tensor_slices(dict(arrays))
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=n > batch_size)
    if ranking is not None:
        m = len(next(iter(ranking.values())))
        extra = tf.data.Dataset.from_tensor_slices(dict(ranking))
        if shuffle:
            extra = extra.shuffle(m, seed=seed + 1, reshuffle_each_iteration=True)
        extra = extra.repeat().batch(min(batch_size, n), drop_remainder=True)
        ds = tf.data.Dataset.zip(ds, extra).map(lambda pos, imp: {**pos, **imp})
    return ds.prefetch(tf.data.AUTOTUNE)
