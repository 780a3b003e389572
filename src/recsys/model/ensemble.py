"""Combine trained models into one servable model: ensemble members, and a popularity prior.

Both keep the artifact's form: one user tower of built-in layers and one item matrix, a score one dot product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import keras
import numpy as np
import pandas as pd

from recsys.errors import TrainingError
from recsys.model.trained import TrainedModel


def join_members(members: Sequence[TrainedModel]) -> TrainedModel:
    """One model from n members trained on the same data: vectors concatenated and scaled by ``1/sqrt(n)``.

    Each member's vectors are unit length, so the joined ones are too, and a joined score (user · item)
    is the mean of the members' scores: the exported artifact stays one user tower (built-in layers only)
    and one item matrix, ``n x embedding_dim`` wide. Loss curves are the members' mean per epoch.
    """
    if not members:
        raise TrainingError("join_members needs at least one trained model.")
    first, scale = members[0], 1.0 / float(np.sqrt(len(members)))
    return replace(
        first,
        user_tower=join_towers([m.user_tower for m in members], scale, "user_tower"),
        item_tower=join_towers([m.item_tower for m in members], scale, "item_tower"),
        item_embeddings=(np.concatenate([m.item_embeddings for m in members], axis=1) * scale).astype(np.float32),
        history=np.mean([m.history for m in members], axis=0).tolist(),
        ranking_history=np.mean([m.ranking_history for m in members], axis=0).tolist() if first.ranking_history else [],
        train_seconds=sum(m.train_seconds for m in members),
        examples=sum(m.examples for m in members),
    )


def with_popularity_prior(model: TrainedModel, positives: pd.DataFrame, weight: float) -> TrainedModel:
    """``model`` whose every score gains ``weight x log(1 + the item's positives in positives)``.

    A score stays one dot product: the item matrix gains the prior as one more column and the user tower a
    constant 1 (built-in layers only). ``item_tower`` is unchanged: it gives the vector columns only.
    """
    if weight < 0:
        raise TrainingError(f"popularity_prior is {weight}; it must be >= 0 (0: off).")
    counts = positives["item_id"].value_counts().reindex(model.item_ids).fillna(0.0).to_numpy()
    prior = (weight * np.log1p(counts)).astype(np.float32)[:, None]
    tower = model.user_tower
    inputs = _inputs_like(tower)
    tower.name = "user_vectors"
    vectors = tower(inputs)
    one = keras.layers.Dense(
        1, kernel_initializer="zeros", bias_initializer="ones", trainable=False, name="popularity_prior_weight"
    )(vectors)
    joined = keras.layers.Concatenate(name="user_vector_and_prior_weight")([vectors, one])
    return replace(
        model,
        user_tower=keras.Model(inputs, joined, name="user_tower"),
        item_embeddings=np.concatenate([model.item_embeddings, prior], axis=1),
        options={**model.options, "popularity_prior": weight},
    )


def join_towers(models: Sequence[Any], scale: float, name: str) -> Any:
    """A Keras model that feeds the same inputs to every model in ``models`` and concatenates their outputs
    times ``scale`` (the members are renamed ``{name}_0``, ``{name}_1``, ...)."""
    inputs = _inputs_like(models[0])
    outputs = []
    for k, model in enumerate(models):
        model.name = f"{name}_{k}"
        outputs.append(model(inputs))
    joined = keras.layers.Concatenate(name=f"{name}_members")(outputs)
    return keras.Model(inputs, keras.layers.Rescaling(scale, name=f"{name}_mean")(joined), name=name)


def _inputs_like(model: Any) -> dict[str, Any]:
    """Fresh ``keras.Input``s with the names, shapes and dtypes of ``model``'s dict inputs (to wrap it)."""
    return {k: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=k) for k, t in model.input.items()}
