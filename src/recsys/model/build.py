"""Build the compiled two-tower model from ``ModelSettings``: inputs, plan, precision policy, optimizer.

The seam under ``recsys.model.fit.train``, public so the accelerator check (``bench/gpu_check.py``) builds the
same model on another Keras backend::

    inputs = prepare_inputs(train_df, items_df, user_names, item_names, cfg)
    with precision_scope(cfg):
        plan = plan_build(inputs, cfg)
        model = build_model(inputs, cfg, plan)   # compiled; fit it on data.training_arrays(...)

The two-tower fields of ``ModelSettings`` it reads (``TWO_TOWER_OPTIONS``, recorded in ``TrainedModel.options``):
``loss``: ``full_catalog`` (softmax over every catalog item: the default, it keeps popularity that in-batch
negatives cancel), ``in_batch`` or ``mixed`` (in-batch + ``num_sampled`` uniform items). ``history_length``: R,
recent items per user fed to the user tower (0: no history input). ``history_id_dim``: width of the trainable
id embedding of those recent items (0: text only). ``item_id_embedding``: give items with training interactions
an id embedding (cold items use the OOV row, trained through ``id_dropout``). ``finetune_bert``: ``auto`` (on
when a GPU is visible), ``on``, ``off``; it fine-tunes the top ``finetune_bert_layers`` BERT layers end to end
(needs a ``text`` column in ``items_df``; forces ``mixed`` negatives). ``jit_compile`` / ``mixed_precision``:
``auto`` (on with a GPU), ``on``, ``off``. ``ranking_loss_weight``: weight of an extra binary cross-entropy loss
on labelled impressions (``train(impressions_df=...)``; label 1 when the user engaged with the item later the
same day, see the training set's ``label_impressions``): each step also scores a batch of impressions
as ``user · item / temperature + b`` and adds ``weight × mean BCE`` to the softmax loss. 0 (default): off, and
the training set fetches no impressions. The exported towers and item matrix do not change form.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd

from recsys.config import ModelSettings
from recsys.errors import TrainingError
from recsys.model import data
from recsys.model.backend import gpus
from recsys.model.two_tower import (
    ITEM_EMBEDDING,
    ITEM_FEATURES,
    ITEM_INDEX,
    LOSSES,
    PADDING_MASK,
    TOKEN_IDS,
    TwoTowerModel,
    build_bert_item_core,
    build_item_core,
    build_user_core,
)

log = logging.getLogger(__name__)

TWO_TOWER_OPTIONS = (
    "loss",
    "num_sampled",
    "history_length",
    "ensemble",
    "history_id_dim",
    "item_id_embedding",
    "id_dropout",
    "hidden_units",
    "mask_history",
    "history_pooling",
    "finetune_bert",
    "finetune_bert_layers",
    "jit_compile",
    "mixed_precision",
    "ranking_loss_weight",
)
"""The two-tower ``ModelSettings`` fields a trained model records (the manifest's ``training_options``)."""


# --- settings -------------------------------------------------------------------------------------------


def check_settings(cfg: ModelSettings) -> None:
    """Refuse settings training cannot use, with what to set instead.

    ``ModelSettings`` validates what it is built from, but ``cfg.model_copy(update=...)`` (how a caller varies
    one experiment) skips validation: this checks a copy's names and the values training depends on.
    """
    unknown = sorted(cfg.model_fields_set - set(ModelSettings.model_fields))
    if unknown:
        raise TrainingError(f"unknown training options {unknown}; known: {sorted(ModelSettings.model_fields)}.")
    for name in ("epochs", "batch_size", "embedding_dim"):
        if getattr(cfg, name) < 1:
            raise TrainingError(f"model.{name} is {getattr(cfg, name)}; it must be a positive integer.")
    if cfg.learning_rate <= 0 or cfg.temperature <= 0:
        raise TrainingError("model.learning_rate and model.temperature must be > 0 (e.g. 0.01 and 0.1).")
    if cfg.loss not in LOSSES:
        raise TrainingError(f"training option loss is {cfg.loss!r}; choose one of {LOSSES}.")
    if cfg.history_length < 0 or cfg.history_id_dim < 0 or cfg.num_sampled < 0:
        raise TrainingError("history_length, history_id_dim and num_sampled must be >= 0.")
    if not 0.0 <= cfg.id_dropout < 1.0:
        raise TrainingError(f"id_dropout is {cfg.id_dropout}; it must be in [0, 1).")
    if not (np.isfinite(cfg.ranking_loss_weight) and cfg.ranking_loss_weight >= 0):
        raise TrainingError(f"ranking_loss_weight is {cfg.ranking_loss_weight}; it must be >= 0 (0: off).")


def resolve_flag(flag: str, name: str) -> bool:
    """An ``auto``/``on``/``off`` setting as a bool: ``auto`` is on when TensorFlow sees a GPU."""
    if flag not in ("auto", "on", "off"):
        raise TrainingError(f"training option {name} is {flag!r}; use 'auto', 'on' or 'off'.")
    return bool(gpus()) if flag == "auto" else flag == "on"


# --- inputs ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingInputs:
    """The training data as arrays (``recsys.model.data``), shared by every ensemble member."""

    items: data.ItemTable
    pairs: data.Interactions
    ranked: data.LabelledImpressions | None  # the ranking loss's impressions; None when it is off
    user_feature_names: list[str]
    item_feature_names: list[str]


def prepare_inputs(
    train_df: pd.DataFrame,
    items_df: pd.DataFrame,
    user_feature_names: Sequence[str],
    item_feature_names: Sequence[str],
    cfg: ModelSettings,
    impressions_df: pd.DataFrame | None = None,
) -> TrainingInputs:
    """Check and index the training frames (their columns: ``recsys.model.fit.train``)."""
    user_names, item_names = list(user_feature_names), list(item_feature_names)
    items = data.item_table(items_df, item_names)
    pairs = data.interactions(train_df, items, user_names, cfg.history_length)
    ranked = _ranking_impressions(impressions_df, train_df, items, user_names, cfg)
    return TrainingInputs(items, pairs, ranked, user_names, item_names)


def _ranking_impressions(
    impressions_df: pd.DataFrame | None,
    train_df: pd.DataFrame,
    items: data.ItemTable,
    user_names: list[str],
    cfg: ModelSettings,
) -> data.LabelledImpressions | None:
    """The labelled impressions of the ranking loss (None when it is off)."""
    if not cfg.ranking_loss_weight:
        if impressions_df is not None and len(impressions_df):
            log.info("ranking_loss_weight is 0: ignoring %d labelled impressions", len(impressions_df))
        return None
    if impressions_df is None or impressions_df.empty:
        raise TrainingError(
            f"ranking_loss_weight is {cfg.ranking_loss_weight} but no labelled impressions were passed: pass "
            "impressions_df (training_set.build returns TrainingData.impressions when model.ranking_loss_weight > 0) "
            "or set model.ranking_loss_weight to 0."
        )
    ranked = data.labelled_impressions(impressions_df, items, user_names, cfg.history_length, train_df)
    rate = float(ranked.labels.mean())
    log.info("ranking loss: %d labelled impressions, %.1f%% positive", len(ranked.labels), 100 * rate)
    if rate in (0.0, 1.0):
        log.warning("ranking loss: every impression has label %d; the BCE term learns only its bias", int(rate))
    return ranked


# --- the plan -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildPlan:
    """Everything the model build needs, decided before entering the distribution strategy's scope.

    ``catalog``: the item core's inputs for every catalog row (text embeddings, or BERT tokens when fine-tuning;
    item features; id indices). ``backbone``: the BERT backbone to fine-tune (None when text is frozen).
    ``loss``: the loss actually used (fine-tuning turns ``full_catalog`` into ``mixed``).
    """

    user_vocab: np.ndarray
    item_vocab: np.ndarray
    catalog: dict[str, np.ndarray]
    finetune: bool
    loss: str
    backbone: Any = None


def plan_build(inputs: TrainingInputs, cfg: ModelSettings) -> BuildPlan:
    """Vocabularies, the text catalog (loads BERT when it is fine-tuned: call under ``precision_scope``) and loss."""
    check_settings(cfg)
    pairs, items = inputs.pairs, inputs.items
    catalog, backbone = _text_catalog(items, cfg)
    catalog[ITEM_FEATURES] = items.features
    item_vocab = np.unique(items.item_ids[pairs.item_rows]) if cfg.item_id_embedding else np.zeros(0, np.int64)
    if cfg.item_id_embedding:
        catalog[ITEM_INDEX] = data.index_of(item_vocab, items.item_ids)
    finetune = backbone is not None
    loss = cfg.loss
    if finetune and loss == "full_catalog":
        log.info("fine-tuning BERT: full-catalog softmax would run BERT over every item per step; using mixed")
        loss = "mixed"
    return BuildPlan(np.unique(pairs.user_ids), item_vocab, catalog, finetune, loss, backbone)


def _text_catalog(items: data.ItemTable, cfg: ModelSettings) -> tuple[dict[str, Any], Any]:
    """The item text part of the catalog, and the BERT backbone when it is fine-tuned (else None)."""
    if not resolve_flag(cfg.finetune_bert, "finetune_bert") or cfg.finetune_bert_layers == 0:
        return {ITEM_EMBEDDING: items.text_embeddings}, None
    if items.texts is None:
        if cfg.finetune_bert == "on":
            raise TrainingError("finetune_bert is 'on' but items_df has no 'text' column: pass the item texts.")
        log.warning("a GPU is visible but items_df has no 'text' column: training on frozen text embeddings")
        return {ITEM_EMBEDDING: items.text_embeddings}, None
    from recsys.model.encoder import load_encoder

    encoder = load_encoder(cfg.bert_checkpoint, cfg.max_length)
    tokens = encoder.tokenizer(
        items.texts, padding="max_length", truncation=True, max_length=cfg.max_length, return_tensors="np"
    )
    catalog = {
        TOKEN_IDS: tokens["input_ids"].astype(np.int32),
        PADDING_MASK: tokens["attention_mask"].astype(np.int32),
    }
    return catalog, encoder.backbone


# --- the model ------------------------------------------------------------------------------------------


def build_model(inputs: TrainingInputs, cfg: ModelSettings, plan: BuildPlan) -> TwoTowerModel:
    """The ``TwoTowerModel`` of ``plan``, compiled with ``optimizer(cfg)`` (XLA per ``cfg.jit_compile``).

    Build it inside the distribution strategy's scope, if any; with the ranking loss on (``inputs.ranked``) its
    bias starts at the labels' log-odds.
    """
    pairs, items, ranked = inputs.pairs, inputs.items, inputs.ranked
    user_core = build_user_core(
        len(plan.user_vocab),
        pairs.user_features.shape[1],
        cfg.embedding_dim,
        _stats(pairs.user_features),
        items.text_embeddings,
        cfg.history_length,
        cfg.history_id_dim,
        cfg.hidden_units,
        cfg.history_pooling == "position",
        cfg.history_pooling == "attention",
    )
    n_ids = len(plan.item_vocab)
    if plan.finetune:
        item_core = build_bert_item_core(
            plan.backbone,
            cfg.finetune_bert_layers,
            cfg.max_length,
            items.features.shape[1],
            cfg.embedding_dim,
            _stats(items.features),
            n_ids,
            cfg.hidden_units,
        )
    else:
        item_core = build_item_core(
            items.text_embeddings.shape[1],
            items.features.shape[1],
            cfg.embedding_dim,
            _stats(items.features),
            n_ids,
            cfg.hidden_units,
        )
    model = TwoTowerModel(
        user_core,
        item_core,
        dict(plan.catalog),
        cfg.temperature,
        loss=plan.loss,
        num_sampled=cfg.num_sampled,
        id_dropout=cfg.id_dropout,
        seed=cfg.seed,
        mask_history=cfg.mask_history,
        ranking_weight=cfg.ranking_loss_weight if ranked is not None else 0.0,
        ranking_bias=_log_odds(ranked.labels) if ranked is not None else 0.0,
        name="two_tower",
    )
    # XLA: the towers' hash-table lookups run outside the step (data.index_of), so the step compiles.
    model.compile(optimizer=optimizer(cfg), jit_compile=resolve_flag(cfg.jit_compile, "jit"))
    return model


def _stats(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return matrix.mean(axis=0), matrix.var(axis=0)


def _log_odds(labels: np.ndarray) -> float:
    """The labels' log-odds (clipped), the ranking bias's starting value: the loss starts at the base rate."""
    rate = float(np.clip(labels.mean(), 1e-3, 1 - 1e-3))
    return float(np.log(rate / (1 - rate)))


def optimizer(cfg: ModelSettings) -> Any:
    """Adam, or AdamW when ``cfg.weight_decay`` > 0; with a weight average when ``cfg.ema_momentum`` > 0.

    ``fit`` swaps the averaged weights in when training ends (``finalize_variable_values``).
    """
    ema = {"use_ema": cfg.ema_momentum > 0, "ema_momentum": cfg.ema_momentum or 0.99}
    if cfg.weight_decay > 0:
        return keras.optimizers.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay, **ema)
    return keras.optimizers.Adam(cfg.learning_rate, **ema)


# --- precision ------------------------------------------------------------------------------------------


def precision_policy(cfg: ModelSettings) -> str:
    """The Keras dtype policy training uses: ``mixed_float16`` when ``cfg.mixed_precision`` resolves on, else
    the current global policy."""
    if resolve_flag(cfg.mixed_precision, "mixed_precision"):
        return "mixed_float16"
    return keras.mixed_precision.dtype_policy().name


@contextmanager
def precision_scope(cfg: ModelSettings) -> Iterator[str]:
    """Set the global dtype policy to ``precision_policy(cfg)`` (yielded) and restore the previous one on exit.

    Plan and build inside it: a fine-tuned BERT backbone is loaded by ``plan_build`` and must compute in the
    policy's dtype too.
    """
    previous = keras.mixed_precision.dtype_policy().name
    policy = precision_policy(cfg)
    keras.mixed_precision.set_dtype_policy(policy)
    try:
        yield policy
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
