"""Keras 3 two-tower retrieval model (TensorFlow backend).

* User tower (exported as ``user_tower.keras``): ``{"user_id": int64 [B], "user_features": float32 [B, F]}``
  -> IntegerLookup (1 OOV bucket) -> Embedding, concatenated with the normalised features -> Dense ->
  L2-normalised float32 ``[B, d]``. Only built-in Keras layers, so it loads without custom objects.
* Item tower: frozen precomputed BERT text embedding ``[B, H]`` + normalised item features ``[B, G]`` ->
  Dense -> L2-normalised ``[B, d]``; run once after training to precompute the item matrix.
* Training model: in-batch softmax over ``user · item / temperature``; other rows of the batch are the
  negatives, except copies of the row's own item (masked out, so popular items are not pushed away from
  the users who chose them).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recsys.model.backend import use_tensorflow_backend

use_tensorflow_backend()

import keras  # noqa: E402  (the backend must be chosen first)
from keras import ops  # noqa: E402

USER_ID = "user_id"
USER_FEATURES = "user_features"
ITEM_ID = "item_id"
ITEM_EMBEDDING = "item_embedding"
ITEM_FEATURES = "item_features"
MASKED_LOGIT = -1e9


def _feature_normalizer(stats: tuple[np.ndarray, np.ndarray] | None, width: int, name: str) -> Any:
    """A fixed (non-adapted) Normalization layer from training mean/variance, or identity for no features."""
    if width == 0 or stats is None:
        return keras.layers.Identity(name=name)
    mean, variance = stats
    return keras.layers.Normalization(
        mean=np.asarray(mean, np.float32), variance=np.maximum(np.asarray(variance, np.float32), 1e-6), name=name
    )


def build_user_tower(
    user_vocabulary: np.ndarray,
    n_features: int,
    embedding_dim: int,
    feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> keras.Model:
    """User tower; ids outside ``user_vocabulary`` share the OOV row (index 0) of the embedding table."""
    user_id = keras.Input(shape=(), dtype="int64", name=USER_ID)
    features = keras.Input(shape=(n_features,), dtype="float32", name=USER_FEATURES)
    vocab = np.asarray(user_vocabulary, dtype=np.int64)
    index = keras.layers.IntegerLookup(vocabulary=vocab, num_oov_indices=1, name="user_lookup")(user_id)
    embedded = keras.layers.Embedding(len(vocab) + 1, embedding_dim, name="user_embedding")(index)
    scaled = _feature_normalizer(feature_stats, n_features, "user_feature_norm")(features)
    joined = keras.layers.Concatenate(name="user_concat")([embedded, scaled])
    projected = keras.layers.Dense(embedding_dim, name="user_dense")(joined)
    out = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="user_vector")(projected)
    return keras.Model({USER_ID: user_id, USER_FEATURES: features}, out, name="user_tower")


def build_item_tower(
    text_dim: int,
    n_features: int,
    embedding_dim: int,
    feature_stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> keras.Model:
    """Item tower over a frozen text embedding and numeric item features."""
    text = keras.Input(shape=(text_dim,), dtype="float32", name=ITEM_EMBEDDING)
    features = keras.Input(shape=(n_features,), dtype="float32", name=ITEM_FEATURES)
    scaled = _feature_normalizer(feature_stats, n_features, "item_feature_norm")(features)
    joined = keras.layers.Concatenate(name="item_concat")([text, scaled])
    projected = keras.layers.Dense(embedding_dim, name="item_dense")(joined)
    out = keras.layers.UnitNormalization(axis=-1, dtype="float32", name="item_vector")(projected)
    return keras.Model({ITEM_EMBEDDING: text, ITEM_FEATURES: features}, out, name="item_tower")


def in_batch_softmax_loss(logits: Any) -> Any:
    """Mean cross-entropy of each row against its own column (row i's positive is item i). ``logits [B, B]``."""
    labels = ops.arange(ops.shape(logits)[0])
    return ops.mean(ops.sparse_categorical_crossentropy(labels, logits, from_logits=True))


@keras.saving.register_keras_serializable(package="recsys")
class TwoTowerModel(keras.Model):
    """Trains both towers with an in-batch softmax; ``call`` returns the masked, temperature-scaled logits."""

    def __init__(self, user_tower: keras.Model, item_tower: keras.Model, temperature: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if temperature <= 0:
            raise ValueError(f"temperature is {temperature}; it must be > 0 (e.g. 0.1).")
        self.user_tower = user_tower
        self.item_tower = item_tower
        self.temperature = float(temperature)

    def call(self, inputs: dict[str, Any], training: bool = False) -> Any:
        users = self.user_tower({USER_ID: inputs[USER_ID], USER_FEATURES: inputs[USER_FEATURES]}, training=training)
        items = self.item_tower(
            {ITEM_EMBEDDING: inputs[ITEM_EMBEDDING], ITEM_FEATURES: inputs[ITEM_FEATURES]}, training=training
        )
        logits = ops.matmul(ops.cast(users, "float32"), ops.transpose(ops.cast(items, "float32")))
        logits = logits / self.temperature
        item_ids = inputs[ITEM_ID]
        same_item = ops.equal(ops.expand_dims(item_ids, 1), ops.expand_dims(item_ids, 0))
        off_diagonal = ops.logical_not(ops.cast(ops.eye(ops.shape(logits)[0]), "bool"))
        return ops.where(ops.logical_and(same_item, off_diagonal), MASKED_LOGIT, logits)

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Any:
        """In-batch softmax loss; ``y`` is unused (the positive of row i is column i)."""
        return in_batch_softmax_loss(y_pred)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "user_tower": keras.saving.serialize_keras_object(self.user_tower),
            "item_tower": keras.saving.serialize_keras_object(self.item_tower),
            "temperature": self.temperature,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TwoTowerModel:
        config = dict(config)
        user = keras.saving.deserialize_keras_object(config.pop("user_tower"))
        item = keras.saving.deserialize_keras_object(config.pop("item_tower"))
        return cls(user, item, **config)


def set_oov_to_mean(user_tower: keras.Model) -> None:
    """Give the OOV row (never trained) the mean of the trained user rows: unknown users act as an average user."""
    table = user_tower.get_layer("user_embedding").embeddings
    values = keras.ops.convert_to_numpy(table)
    if len(values) > 1:
        values[0] = values[1:].mean(axis=0)
        table.assign(values)
