"""Train the two-tower model: fit each ensemble member, join them, precompute the item matrix.

``train`` is the pipeline's entry (``recsys.pipeline.train_stage``); ``fit_member`` and ``item_matrix`` are the
steps it runs per member, over the build seam of ``recsys.model.build``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import keras
import numpy as np
import pandas as pd

from recsys.config import ModelSettings
from recsys.errors import TrainingError
from recsys.model import data
from recsys.model.backend import distribution_strategy, require_tensorflow
from recsys.model.build import (
    TWO_TOWER_OPTIONS,
    TrainingInputs,
    build_model,
    check_settings,
    plan_build,
    precision_scope,
    prepare_inputs,
)
from recsys.model.ensemble import join_members, with_popularity_prior
from recsys.model.trained import TrainedModel
from recsys.model.two_tower import TwoTowerModel, build_user_tower, set_oov_to_mean
from recsys.progress import progress_bar

log = logging.getLogger(__name__)


class EpochProgress(keras.callbacks.Callback):
    """A Keras callback drawing one bar per ``fit`` on stderr, a step per epoch with its loss (``recsys.progress``).

    ``show``: None draws it only when stderr is a terminal (quiet in Airflow task logs and under pytest), True
    always, False never. The training stage passes it; ``train`` alone (tests, benches) shows nothing.
    """

    def __init__(self, show: bool | None = None) -> None:
        super().__init__()
        self._show = show
        self._bar: ExitStack | None = None
        self._advance: Any = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Open the bar: ``params["epochs"]`` steps."""
        self._close()
        self._bar = ExitStack()
        total = self.params.get("epochs") if self.params else None
        self._advance = self._bar.enter_context(progress_bar("training (epochs)", total, show=self._show))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """One step, with the epoch's loss in the description."""
        if self._advance is None:
            return
        loss = (logs or {}).get("loss")
        self._advance(1, description=None if loss is None else f"training (epochs), loss {float(loss):.4f}")

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Close the bar."""
        self._close()

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._advance = None, None


def train(
    train_df: pd.DataFrame,
    items_df: pd.DataFrame,
    user_feature_names: Sequence[str],
    item_feature_names: Sequence[str],
    cfg: ModelSettings,
    *,
    callbacks: Sequence[Any] = (),
    impressions_df: pd.DataFrame | None = None,
) -> TrainedModel:
    """Train the two-tower model on positive interactions and precompute the item matrix.

    ``train_df``: one row per positive interaction (``user_id``, ``item_id``, ``event_timestamp`` + the
    user feature columns as of the interaction; optionally ``recent_item_ids``, the user's earlier
    positives newest first; without it they are derived from ``train_df``). ``items_df``: one row per
    candidate item (``item_id``, ``embedding`` + the item feature columns; ``text`` for BERT fine-tuning).
    ``impressions_df``: labelled impressions for the ranking loss (``user_id``, ``item_id``, ``label`` 0/1,
    ``event_timestamp`` + the user feature columns as of the impression; optionally ``recent_item_ids``,
    else derived from ``train_df``), needed when ``cfg.ranking_loss_weight > 0`` and ignored otherwise.
    ``cfg`` holds every knob (``recsys.model.build`` says what the two-tower ones do); vary one experiment
    with ``cfg.model_copy(update={...})``. Seeded by ``cfg.seed``; TensorFlow only: CPU unless a GPU is visible,
    then ``MirroredStrategy``, mixed precision, XLA. ``cfg.ensemble`` n > 1 trains n members on the same inputs
    (seeds ``cfg.seed + k``; ``callbacks`` see each member's fit) and returns them joined into one model
    (``join_members``).
    """
    require_tensorflow("training (tf.data input, MirroredStrategy)")
    check_settings(cfg)
    inputs = prepare_inputs(train_df, items_df, user_feature_names, item_feature_names, cfg, impressions_df)
    members = []
    for k in range(cfg.ensemble):
        if cfg.ensemble > 1:
            log.info("training ensemble member %d of %d (seed %d)", k + 1, cfg.ensemble, cfg.seed + k)
        members.append(fit_member(inputs, cfg.model_copy(update={"seed": cfg.seed + k}), callbacks))
    model = members[0] if len(members) == 1 else join_members(members)
    if cfg.popularity_prior > 0:
        model = with_popularity_prior(model, train_df, cfg.popularity_prior)
    return model


def fit_member(inputs: TrainingInputs, cfg: ModelSettings, callbacks: Sequence[Any] = ()) -> TrainedModel:
    """One two-tower model (seeded by ``cfg.seed``) fitted on ``inputs`` with ``tf.data``; see ``train``."""
    pairs, items = inputs.pairs, inputs.items
    keras.utils.set_random_seed(cfg.seed)
    _check_average(cfg, len(pairs.user_ids))
    with precision_scope(cfg):
        started = time.perf_counter()
        plan = plan_build(inputs, cfg)
        with distribution_strategy().scope():
            model = build_model(inputs, cfg, plan)
        arrays = data.training_arrays(pairs, plan.user_vocab, items.item_ids)
        ranked = inputs.ranked
        ranking = None if ranked is None else data.ranking_arrays(ranked, plan.user_vocab, items.item_ids)
        dataset = data.training_dataset(arrays, cfg.batch_size, cfg.seed, ranking=ranking)
        fit = model.fit(dataset, epochs=cfg.epochs, shuffle=False, verbose=0, callbacks=list(callbacks))
        seconds = time.perf_counter() - started
        losses = [float(v) for v in fit.history["loss"]]
        ranking_losses = [float(v) for v in fit.history.get("ranking_loss", [])]
        if not np.all(np.isfinite(losses)):
            raise TrainingError(f"training diverged (loss per epoch {losses}): lower model.learning_rate.")
        log.info(
            "trained %d epochs on %d interactions in %.1f s: loss %s", cfg.epochs, len(pairs.user_ids), seconds, losses
        )
        if ranking_losses:
            log.info("ranking BCE per epoch: %s", ranking_losses)
        if cfg.id_dropout == 0:
            set_oov_to_mean(model.user_core)
        vectors = item_matrix(model, len(items.item_ids))
    user_tower = build_user_tower(
        plan.user_vocab,
        pairs.user_features.shape[1],
        cfg.embedding_dim,
        core=model.user_core,
        item_vocabulary=items.item_ids,
    )
    return TrainedModel(
        user_tower=user_tower,
        item_tower=model.item_core,
        item_ids=items.item_ids,
        item_embeddings=_unit_rows(vectors),
        user_feature_names=list(inputs.user_feature_names),
        item_feature_names=list(inputs.item_feature_names),
        history=losses,
        ranking_history=ranking_losses,
        history_length=cfg.history_length,
        options=_options(cfg, plan.loss, plan.finetune),
        train_seconds=seconds,
        examples=len(pairs.user_ids) * cfg.epochs,
    )


def _options(cfg: ModelSettings, loss: str, finetuned_bert: bool) -> dict[str, Any]:
    """What a trained model records of its settings: the two-tower options, the loss used, BERT fine-tuned."""
    return {**{name: getattr(cfg, name) for name in TWO_TOWER_OPTIONS}, "loss": loss, "finetuned_bert": finetuned_bert}


def _check_average(cfg: ModelSettings, n_examples: int) -> None:
    """Warn when the weight average (no bias correction) would still hold much of the initial weights."""
    steps = max(n_examples // cfg.batch_size, 1) * cfg.epochs
    initial = cfg.ema_momentum**steps
    if cfg.ema_momentum and initial > 0.05:
        log.warning(
            "ema_momentum %.3f over %d training steps: %.0f%% of the averaged weights are still the initial ones; "
            "set model.ema_momentum to %.2f or less, or train longer.",
            cfg.ema_momentum,
            steps,
            100 * initial,
            max(0.0, 1.0 - 3.0 / steps),
        )


def item_matrix(model: TwoTowerModel, n_items: int, chunk: int = 4096) -> np.ndarray:
    """The item core over every catalog row (no dropout), float32 ``[M, d]``, in chunks of ``chunk`` rows."""
    out = [
        keras.ops.convert_to_numpy(model.item_vectors(np.arange(lo, min(lo + chunk, n_items), dtype=np.int32)))
        for lo in range(0, n_items, chunk)
    ]
    return np.concatenate(out).astype(np.float32)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
