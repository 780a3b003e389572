"""Keras 3 two-tower retrieval model (``keras.ops`` only: trained on TensorFlow, also runs on JAX).

Each tower is split in two so the training step can be XLA-compiled: a *lookup* part (``IntegerLookup``
hash tables, which XLA cannot compile) and a *core* part (embeddings, dense layers) that takes row indices.
Training feeds indices computed outside the graph (``recsys.model.data``); the exported user tower
composes lookup + core into one functional model of built-in layers, so it loads without custom objects.

* User tower (exported as ``user_tower.keras``), inputs ``{"user_id": int64 [B], "user_features": float32
  [B, F], "recent_item_ids": int64 [B, R]}`` (``recent_item_ids`` only when built with ``history_length``
  R > 0; pad with -1, any id outside the catalog vocabulary is ignored). Parts: id embedding (1 OOV
  bucket), normalised features, and the user's recent items: their frozen BERT text vectors (a
  non-trainable lookup table inside the tower) mean-pooled over the valid positions and L2-normalised, the
  fraction of valid positions, and optionally a trainable id embedding of those items pooled the same way
  -> Dense -> L2-normalised float32 ``[B, d]``.
* Item tower: text (a precomputed frozen BERT embedding ``[B, H]``, or token ids run through a BERT backbone
  whose top layers fine-tune, see ``build_bert_item_core``) + normalised item features + optional id
  embedding (OOV row for items without training interactions) -> Dense -> L2-normalised ``[B, d]``; run
  once after training to precompute the item matrix.
* Training model (``TwoTowerModel``): softmax over ``user · item / temperature`` with the candidates chosen by
  ``loss``: ``full_catalog`` (every catalog item; sparse cross-entropy on the positive's row),
  ``in_batch`` (the batch's positives; copies of a row's own item are masked) or ``mixed`` (in-batch plus
  ``num_sampled`` uniformly sampled catalog items). ``id_dropout`` replaces user and item ids by the OOV
  bucket at random during training, so the OOV rows learn "an unknown user/item".
* Optional ranking loss (``ranking_weight > 0``): each batch also carries labelled impressions under keys
  prefixed ``rank_`` (``rank_user_index``, ``rank_user_features``, optional ``rank_recent_rows``,
  ``rank_item_row``, ``rank_label`` float 0/1). Their logit is ``user · item / temperature + b`` (``b`` a
  learned scalar, not exported: it shifts every score equally) and the loss adds ``ranking_weight`` times
  their mean binary cross-entropy. The exported towers are the same either way.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from recsys.artifact import RECENT_ITEM_IDS, USER_FEATURES, USER_ID

USER_INDEX = "user_index"
RECENT_ROWS = "recent_rows"
ITEM_ID = "item_id"
ITEM_EMBEDDING = "item_embedding"
ITEM_FEATURES = "item_features"
ITEM_INDEX = "item_index"
ITEM_ROW = "item_row"
TOKEN_IDS = "token_ids"
PADDING_MASK = "padding_mask"
RANK_PREFIX = "rank_"  # the labelled-impression part of a batch: the same user-core inputs, prefixed
RANK_ITEM_ROW = RANK_PREFIX + ITEM_ROW
RANK_LABEL = RANK_PREFIX + "label"
MASKED_LOGIT = -1e9
LOSSES = ("full_catalog", "in_batch", "mixed")


def _feature_normalizer(stats: tuple[np.ndarray, np.ndarray] | None, width: int, name: str) -> Any:
    """A fixed (non-adapted) Normalization layer from training mean/variance, or identity for no features."""
    if width == 0 or stats is None:
        return keras.layers.Identity(name=name)
    mean, variance = stats
    return keras.layers.Normalization(
        mean=np.asarray(mean, np.float32), variance=np.maximum(np.asarray(variance, np.float32), 1e-6), name=name
    )


def _frozen_table(values: np.ndarray, name: str) -> Any:
    """A non-trainable Embedding whose row ``i + 1`` is ``values[i]`` and row 0 (padding/unknown) is zeros."""
    table = np.concatenate([np.zeros((1, values.shape[1]), np.float32), np.asarray(values, np.float32)])
    return keras.layers.Embedding(
        table.shape[0],
        table.shape[1],
        embeddings_initializer=keras.initializers.Constant(table),
        trainable=False,
        name=name,
    )


EMPTY_HISTORY_GUARD = 1e-3


def _unit_history_mean(pooled: Any, fill: Any, name: str) -> Any:
    """L2-normalise a pooled history vector in float32, with an extra component ``c * (1 - fill)``.

    An empty history pools to the zero vector, and normalising zero is 0/0: NaN gradients (and NaN outputs
    in float16), which XLA and mixed precision expose. The extra component (``c`` = ``EMPTY_HISTORY_GUARD``)
    makes an empty history a fixed unit vector and is 0 for a full one; built-in layers only, so the
    exported tower still loads without custom objects.
    """
    guard = keras.layers.Rescaling(
        scale=-EMPTY_HISTORY_GUARD, offset=EMPTY_HISTORY_GUARD, dtype="float32", name=f"{name}_guard"
    )(fill)
    joined = keras.layers.Concatenate(dtype="float32", name=f"{name}_guarded")([pooled, guard])
    return keras.layers.UnitNormalization(axis=-1, dtype="float32", name=name)(joined)


def _pool(sequence: Any, name: str, by_position: bool) -> Any:
    """``[B, R, d]`` -> ``[B, d]``: the mean over the R positions, or a learned weight per position.

    Position weights start at ``1/R`` (the mean) and learn how much the newest items count against older
    ones (the history is newest first); padding rows are zeros, so they add nothing either way.
    """
    if not by_position:
        return keras.layers.GlobalAveragePooling1D(dtype="float32", name=f"{name}_pool")(sequence)
    length = int(sequence.shape[1])
    by_column = keras.layers.Permute((2, 1), dtype="float32", name=f"{name}_by_position")(sequence)  # [B, d, R]
    weighted = keras.layers.Dense(
        1,
        use_bias=False,
        kernel_initializer=keras.initializers.Constant(1.0 / length),
        dtype="float32",
        name=f"{name}_position_weights",
    )(by_column)
    return keras.layers.Flatten(dtype="float32", name=f"{name}_pool")(weighted)


def _newest_attends(items: Any, valid: Any, name: str) -> Any:
    """``[B, R, d]`` newest first -> ``[B, d]``: the newest item attends over the valid history (2 heads).

    Built-in layers only (Cropping1D, Permute, MultiHeadAttention, Flatten); padding is masked out.
    """
    length, width = int(items.shape[1]), int(items.shape[2])
    newest = keras.layers.Cropping1D((0, length - 1), name=f"{name}_newest")(items)  # [B, 1, d]
    mask = keras.layers.Permute((2, 1), dtype="float32", name=f"{name}_attention_mask")(valid)  # [B, 1, R]
    attended = keras.layers.MultiHeadAttention(
        num_heads=2, key_dim=max(width // 2, 1), dtype="float32", name=f"{name}_attention"
    )(newest, items, attention_mask=mask)
    return keras.layers.Flatten(dtype="float32", name=f"{name}_attended")(attended)


def _history_parts(
    rows: Any, history_text: np.ndarray, history_id_dim: int, by_position: bool = False, attention: bool = False
) -> list[Any]:
    """Pooled recent-item parts from history rows ``[B, R]`` (row 0 = padding or unknown item)."""
    n_items = history_text.shape[0]
    valid = _frozen_table(np.ones((n_items, 1), np.float32), "recent_item_valid")(rows)  # [B, R, 1]
    text = _frozen_table(history_text, "recent_item_text")(rows)  # padding rows are zeros
    fill = keras.layers.GlobalAveragePooling1D(dtype="float32", name="recent_fill")(valid)  # share of valid rows
    pooled_text = _pool(text, "recent_text", by_position)
    parts = [_unit_history_mean(pooled_text, fill, "recent_text_mean"), fill]
    if history_id_dim:
        ids = keras.layers.Embedding(n_items + 1, history_id_dim, dtype="float32", name="recent_item_embedding")(rows)
        masked = keras.layers.Multiply(dtype="float32", name="recent_item_masked")([ids, valid])
        pooled = _pool(masked, "recent_item", by_position)
        parts.append(_unit_history_mean(pooled, fill, "recent_item_mean"))
        if attention:
            parts.append(_newest_attends(masked, valid, "recent_item"))
    return parts


def build_user_core(
    n_users: int,
    n_features: int,
    embedding_dim: int,
    feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
    history_text: np.ndarray | None = None,
    history_length: int = 0,
    history_id_dim: int = 0,
    hidden_units: int = 0,
    position_pooling: bool = False,
    history_attention: bool = False,
) -> keras.Model:
    """User tower on looked-up indices: ``user_index [B]`` (0 = OOV), features, ``recent_rows [B, R]``.

    ``history_text[i]`` is the frozen text vector of history row ``i + 1`` (row 0 is padding/unknown).
    """
    index = keras.Input(shape=(), dtype="int32", name=USER_INDEX)
    features = keras.Input(shape=(n_features,), dtype="float32", name=USER_FEATURES)
    inputs = {USER_INDEX: index, USER_FEATURES: features}
    parts = [
        keras.layers.Embedding(n_users + 1, embedding_dim, name="user_embedding")(index),
        _feature_normalizer(feature_stats, n_features, "user_feature_norm")(features),
    ]
    if history_length > 0:
        if history_text is None:
            raise ValueError("history_length > 0 needs history_text (the catalog's text embeddings).")
        rows = keras.Input(shape=(history_length,), dtype="int32", name=RECENT_ROWS)
        inputs[RECENT_ROWS] = rows
        parts += _history_parts(rows, history_text, history_id_dim, position_pooling, history_attention)
    joined = keras.layers.Concatenate(name="user_concat")(parts)
    if hidden_units:
        joined = keras.layers.Dense(hidden_units, activation="relu", name="user_hidden")(joined)
    projected = keras.layers.Dense(embedding_dim, name="user_dense")(joined)
    out = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="user_vector")(projected)
    return keras.Model(inputs, out, name="user_core")


def build_user_tower(
    user_vocabulary: np.ndarray,
    n_features: int,
    embedding_dim: int,
    feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    core: keras.Model | None = None,
    item_vocabulary: np.ndarray | None = None,
    history_text: np.ndarray | None = None,
    history_length: int = 0,
    history_id_dim: int = 0,
    hidden_units: int = 0,
) -> keras.Model:
    """The exported user tower: id lookups (unknown ids -> OOV bucket 0) feeding the user core.

    Pass a trained ``core`` to wrap it; otherwise a fresh core is built. ``item_vocabulary`` (the catalog
    item ids, history row ``i + 1`` is ``item_vocabulary[i]``) is needed when ``history_length > 0``.
    """
    vocab = np.asarray(user_vocabulary, dtype=np.int64)
    if core is None:
        core = build_user_core(
            len(vocab),
            n_features,
            embedding_dim,
            feature_stats,
            history_text,
            history_length,
            history_id_dim,
            hidden_units,
        )
    user_id = keras.Input(shape=(), dtype="int64", name=USER_ID)
    features = keras.Input(shape=(n_features,), dtype="float32", name=USER_FEATURES)
    inputs = {USER_ID: user_id, USER_FEATURES: features}
    index = keras.layers.IntegerLookup(vocabulary=vocab, num_oov_indices=1, output_mode="int", name="user_lookup")
    core_inputs = {USER_INDEX: index(user_id), USER_FEATURES: features}
    if RECENT_ROWS in core.input:
        length = int(core.input[RECENT_ROWS].shape[-1])
        if item_vocabulary is None:
            raise ValueError("a user tower with recent items needs item_vocabulary (the catalog item ids).")
        recent = keras.Input(shape=(length,), dtype="int64", name=RECENT_ITEM_IDS)
        inputs[RECENT_ITEM_IDS] = recent
        lookup = keras.layers.IntegerLookup(
            vocabulary=np.asarray(item_vocabulary, np.int64), num_oov_indices=1, name="recent_item_lookup"
        )
        core_inputs[RECENT_ROWS] = lookup(recent)
    out = core(core_inputs)
    return keras.Model(inputs, out, name="user_tower")


def build_item_core(
    text_dim: int,
    n_features: int,
    embedding_dim: int,
    feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
    n_item_ids: int = 0,
    hidden_units: int = 0,
) -> keras.Model:
    """Item tower over a frozen text embedding, numeric item features and (if ``n_item_ids``) an id index."""
    text = keras.Input(shape=(text_dim,), dtype="float32", name=ITEM_EMBEDDING)
    return _item_head({ITEM_EMBEDDING: text}, text, n_features, embedding_dim, feature_stats, n_item_ids, hidden_units)


def build_item_tower(
    text_dim: int,
    n_features: int,
    embedding_dim: int,
    feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> keras.Model:
    """Item tower without an id embedding (inputs ``item_embedding`` and ``item_features``)."""
    return build_item_core(text_dim, n_features, embedding_dim, feature_stats)


def _item_head(
    inputs: dict[str, Any],
    text: Any,
    n_features: int,
    embedding_dim: int,
    feature_stats: tuple[np.ndarray, np.ndarray] | None,
    n_item_ids: int,
    hidden_units: int,
) -> keras.Model:
    features = keras.Input(shape=(n_features,), dtype="float32", name=ITEM_FEATURES)
    inputs = {**inputs, ITEM_FEATURES: features}
    parts = [text, _feature_normalizer(feature_stats, n_features, "item_feature_norm")(features)]
    if n_item_ids:
        index = keras.Input(shape=(), dtype="int32", name=ITEM_INDEX)
        inputs[ITEM_INDEX] = index
        parts.append(keras.layers.Embedding(n_item_ids + 1, embedding_dim, name="item_id_embedding")(index))
    joined = keras.layers.Concatenate(name="item_concat")(parts)
    if hidden_units:
        joined = keras.layers.Dense(hidden_units, activation="relu", name="item_hidden")(joined)
    projected = keras.layers.Dense(embedding_dim, name="item_dense")(joined)
    out = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="item_vector")(projected)
    return keras.Model(inputs, out, name="item_core")


@keras.saving.register_keras_serializable(package="recsys")
class BertTextPooler(keras.layers.Layer):
    """A BERT backbone with only its top ``trainable_layers`` transformer layers trainable; masked mean, L2.

    Used by the item tower when BERT is fine-tuned end to end (GPU); the item tower is never exported (its
    output matrix is), so this custom layer never has to be loaded by serving.
    """

    def __init__(self, backbone: Any, trainable_layers: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.backbone = backbone
        self.trainable_layers = int(trainable_layers)
        freeze_lower_layers(backbone, self.trainable_layers)

    def call(self, token_ids: Any, padding_mask: Any) -> Any:
        hidden = self.backbone(
            {TOKEN_IDS: token_ids, "segment_ids": ops.zeros_like(token_ids), PADDING_MASK: padding_mask}
        )["sequence_output"]
        mask = ops.expand_dims(ops.cast(padding_mask, hidden.dtype), -1)
        mean = ops.sum(hidden * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1.0)
        return ops.cast(ops.normalize(ops.cast(mean, "float32"), axis=-1), self.compute_dtype)


def freeze_lower_layers(backbone: Any, trainable_layers: int) -> None:
    """Freeze the embeddings and all but the top ``trainable_layers`` transformer layers of a BertBackbone."""
    layers = list(backbone.transformer_layers)
    if not 0 <= trainable_layers <= len(layers):
        raise ValueError(f"trainable BERT layers is {trainable_layers}; the backbone has {len(layers)} layers.")
    for layer in backbone.layers:
        layer.trainable = False
    for layer in layers[len(layers) - trainable_layers :]:
        layer.trainable = True


def build_bert_item_core(
    backbone: Any,
    trainable_layers: int,
    max_length: int,
    n_features: int,
    embedding_dim: int,
    feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
    n_item_ids: int = 0,
    hidden_units: int = 0,
) -> keras.Model:
    """Item tower whose text part is BERT itself (inputs ``token_ids``/``padding_mask`` int32 ``[B, L]``)."""
    token_ids = keras.Input(shape=(max_length,), dtype="int32", name=TOKEN_IDS)
    padding_mask = keras.Input(shape=(max_length,), dtype="int32", name=PADDING_MASK)
    text = BertTextPooler(backbone, trainable_layers, name="bert_text")(token_ids, padding_mask)
    inputs = {TOKEN_IDS: token_ids, PADDING_MASK: padding_mask}
    return _item_head(inputs, text, n_features, embedding_dim, feature_stats, n_item_ids, hidden_units)


def in_batch_softmax_loss(logits: Any) -> Any:
    """Mean cross-entropy of each row against its own column (row i's positive is item i). ``logits [B, B]``."""
    labels = ops.arange(ops.shape(logits)[0])
    return ops.mean(ops.sparse_categorical_crossentropy(labels, logits, from_logits=True))


def catalog_softmax_loss(logits: Any, positive_rows: Any) -> Any:
    """Mean cross-entropy of each user's logits over the whole catalog ``[B, M]`` on its positive's row."""
    return ops.mean(ops.sparse_categorical_crossentropy(positive_rows, logits, from_logits=True))


def ranking_bce_loss(logits: Any, labels: Any) -> Any:
    """Mean binary cross-entropy with logits: ``max(z, 0) - z * y + log(1 + exp(-|z|))`` over ``[B]``."""
    labels = ops.cast(labels, logits.dtype)
    per_row = ops.maximum(logits, 0.0) - logits * labels + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.mean(per_row)


class TwoTowerModel(keras.Model):
    """Trains the user and item cores with a softmax retrieval loss; ``call`` returns the scaled logits.

    ``catalog`` holds the item core's inputs for every catalog item (row order = item table order; keys =
    the item core's input names); a batch gives ``user_index``, ``user_features``, optional ``recent_rows``
    and ``item_row`` (the positive's catalog row). Not exported itself: its cores are.

    ``ranking_weight > 0`` adds the BCE ranking loss on the batch's ``rank_*`` impressions (see the module
    docstring); ``ranking_bias`` is the initial value of its learned scalar bias (e.g. the labels' log-odds).
    Its mean per epoch is the metric ``ranking_loss``.
    """

    def __init__(
        self,
        user_core: keras.Model,
        item_core: keras.Model,
        catalog: dict[str, np.ndarray],
        temperature: float,
        loss: str = "full_catalog",
        num_sampled: int = 0,
        id_dropout: float = 0.0,
        seed: int = 0,
        mask_history: bool = False,
        ranking_weight: float = 0.0,
        ranking_bias: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature is {temperature}; it must be > 0 (e.g. 0.1).")
        if loss not in LOSSES:
            raise ValueError(f"loss is {loss!r}; choose one of {LOSSES}.")
        if not 0.0 <= id_dropout < 1.0:
            raise ValueError(f"id_dropout is {id_dropout}; it must be in [0, 1).")
        if not ranking_weight >= 0:  # also rejects NaN
            raise ValueError(f"ranking_weight is {ranking_weight}; it must be >= 0 (0: no ranking loss).")
        self.user_core, self.item_core = user_core, item_core
        self.temperature, self.loss_name = float(temperature), loss
        self.num_sampled, self.id_dropout = int(num_sampled), float(id_dropout)
        self.mask_history = bool(mask_history)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.catalog_size = len(next(iter(catalog.values())))
        self.catalog = {
            name: self.add_weight(
                shape=value.shape,
                dtype=str(value.dtype),
                initializer=keras.initializers.Constant(value),
                trainable=False,
                name=f"catalog_{name}",
            )
            for name, value in catalog.items()
        }
        self.ranking_weight = float(ranking_weight)
        if self.ranking_weight:
            self.ranking_bias = self.add_weight(
                shape=(), initializer=keras.initializers.Constant(float(ranking_bias)), name="ranking_bias"
            )
            self.ranking_loss_tracker = keras.metrics.Mean(name="ranking_loss")

    def _drop_ids(self, index: Any) -> Any:
        keep = keras.random.uniform(ops.shape(index), seed=self.seed_generator) >= self.id_dropout
        return ops.where(keep, index, ops.zeros_like(index))

    def item_vectors(self, rows: Any | None, training: bool = False) -> Any:
        """Item core outputs for catalog ``rows`` (all items when None)."""
        inputs = {k: (v if rows is None else ops.take(v, rows, axis=0)) for k, v in self.catalog.items()}
        if training and self.id_dropout and ITEM_INDEX in inputs:
            inputs[ITEM_INDEX] = self._drop_ids(inputs[ITEM_INDEX])
        return self.item_core(inputs, training=training)

    def _candidate_rows(self, positives: Any) -> Any | None:
        if self.loss_name == "full_catalog":
            return None
        if self.loss_name == "in_batch" or not self.num_sampled:
            return positives
        sampled = keras.random.randint((self.num_sampled,), 0, self.catalog_size, seed=self.seed_generator)
        return ops.concatenate([positives, ops.cast(sampled, positives.dtype)])

    def call(self, inputs: dict[str, Any], training: bool = False) -> Any:
        user_inputs = {k: inputs[k] for k in self.user_core.input if k in inputs}
        if training and self.id_dropout:
            user_inputs[USER_INDEX] = self._drop_ids(user_inputs[USER_INDEX])
        users = ops.cast(self.user_core(user_inputs, training=training), "float32")
        positives = inputs[ITEM_ROW]
        rows = self._candidate_rows(positives)
        items = ops.cast(self.item_vectors(rows, training=training), "float32")
        logits = ops.matmul(users, ops.transpose(items)) / self.temperature
        if self.mask_history and RECENT_ROWS in inputs:
            logits = self._mask_history(logits, inputs[RECENT_ROWS], positives, rows)
        if rows is None:
            return logits
        same_item = ops.equal(ops.expand_dims(positives, 1), ops.expand_dims(rows, 0))
        own_column = ops.equal(
            ops.expand_dims(ops.arange(ops.shape(positives)[0]), 1), ops.expand_dims(ops.arange(ops.shape(rows)[0]), 0)
        )
        return ops.where(ops.logical_and(same_item, ops.logical_not(own_column)), MASKED_LOGIT, logits)

    def _mask_history(self, logits: Any, recent_rows: Any, positives: Any, rows: Any | None) -> Any:
        """Items in a row's own history are not its negatives (recommendations exclude seen items too).

        ``recent_rows [B, R]``: history row ``r`` is catalog row ``r - 1``, 0 is padding. The row's positive
        stays a candidate even when the user saw it before.
        """
        batch, length = ops.shape(recent_rows)[0], ops.shape(recent_rows)[1]
        columns = ops.where(recent_rows > 0, recent_rows - 1, self.catalog_size)  # padding -> a spare column
        pairs = ops.stack(
            [ops.reshape(ops.repeat(ops.expand_dims(ops.arange(batch), 1), length, axis=1), [-1]),
             ops.reshape(ops.cast(columns, "int32"), [-1])],
            axis=1,
        )  # fmt: skip
        ones = ops.ones((batch * length,), "float32")
        seen = ops.scatter(pairs, ones, (batch, self.catalog_size + 1))[:, : self.catalog_size] > 0  # [B, M]
        if rows is not None:
            seen = ops.take(seen, rows, axis=1)  # [B, C] over the candidate rows
            candidates = rows
        else:
            candidates = ops.arange(self.catalog_size)
        own = ops.equal(ops.expand_dims(positives, 1), ops.expand_dims(ops.cast(candidates, positives.dtype), 0))
        return ops.where(ops.logical_and(seen, ops.logical_not(own)), MASKED_LOGIT, logits)

    def ranking_logits(self, inputs: dict[str, Any], training: bool = False) -> Any:
        """``user · item / temperature + bias`` of the batch's labelled impressions (``rank_*`` keys), ``[B]``."""
        user_inputs = {k: inputs[RANK_PREFIX + k] for k in self.user_core.input if RANK_PREFIX + k in inputs}
        if training and self.id_dropout:
            user_inputs[USER_INDEX] = self._drop_ids(user_inputs[USER_INDEX])
        users = ops.cast(self.user_core(user_inputs, training=training), "float32")
        items = ops.cast(self.item_vectors(inputs[RANK_ITEM_ROW], training=training), "float32")
        return ops.sum(users * items, axis=-1) / self.temperature + ops.cast(self.ranking_bias, "float32")

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Any:
        """Softmax cross-entropy (label: the positive's catalog row, or column i), plus the weighted ranking
        BCE when the model has a ranking weight and the batch carries labelled impressions."""
        if self.loss_name == "full_catalog":
            loss = catalog_softmax_loss(y_pred, x[ITEM_ROW])
        else:
            loss = in_batch_softmax_loss(y_pred)
        if self.ranking_weight and RANK_LABEL in x:
            ranking = ranking_bce_loss(self.ranking_logits(x, training=training), x[RANK_LABEL])
            self.ranking_loss_tracker.update_state(ranking)
            loss = loss + self.ranking_weight * ranking
        return loss


def set_oov_to_mean(core: keras.Model, layer: str = "user_embedding") -> None:
    """Give the OOV row of ``layer`` the mean of its other rows (only if it never trained: ``id_dropout`` 0)."""
    table = core.get_layer(layer).embeddings
    values = keras.ops.convert_to_numpy(table)
    if len(values) > 1:
        values[0] = values[1:].mean(axis=0)
        table.assign(values)
