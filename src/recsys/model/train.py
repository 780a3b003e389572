"""Train the two-tower model and export it as a model artifact.

The artifact's files, manifest and loading are ``recsys.artifact``'s; scoring and ranking are
``recsys.scoring``'s (one path for evaluation, the promotion gate and the service). ``load_artifact``,
``top_k``, ``recommend`` and ``model_scorer`` here are thin conveniences over those two.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.artifact import (
    PAD_ITEM_ID,
    RECENT_ITEM_IDS,
    REQUIRED_METADATA,
    ModelArtifact,
    write_artifact,
)
from recsys.config import ModelSettings
from recsys.errors import ArtifactError, TrainingError
from recsys.model import data
from recsys.model.backend import distribution_strategy, gpus
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
    build_user_tower,
    keras,
    set_oov_to_mean,
)
from recsys.scoring import Ranked, Scorer, columns_of, top_k_indices

log = logging.getLogger(__name__)


_DEFAULTS = ModelSettings.model_fields  # one set of defaults: the settings'


@dataclass(frozen=True)
class TrainOptions:
    """Two-tower knobs (defaults: the same-named ``ModelSettings`` fields, so ``model:`` config sets them).

    ``loss``: ``full_catalog`` (softmax over every catalog item: the default, it keeps popularity that
    in-batch negatives cancel), ``in_batch`` or ``mixed`` (in-batch + ``num_sampled`` uniform items).
    ``history_length``: R, recent items per user fed to the user tower (0: no history input).
    ``history_id_dim``: width of the trainable id embedding of those recent items (0: text only).
    ``item_id_embedding``: give items with training interactions an id embedding (cold items use the OOV
    row, trained through ``id_dropout``). ``finetune_bert``: ``auto`` (on when a GPU is visible), ``on``,
    ``off``; it fine-tunes the top ``finetune_bert_layers`` BERT layers end to end (needs a ``text``
    column in ``items_df``; forces ``mixed`` negatives). ``jit_compile`` / ``mixed_precision``: ``auto``
    (on with a GPU), ``on``, ``off``. ``ranking_loss_weight``: weight of an extra binary cross-entropy loss
    on labelled impressions (``train(impressions_df=...)``; label 1 when the user engaged with the item later
    the same day, see ``training_set.label_impressions``): each step also scores a batch of impressions as
    ``user · item / temperature + b`` and adds ``weight × mean BCE`` to the softmax loss. 0 (default): off,
    and the training set fetches no impressions. The exported towers and item matrix do not change form.
    """

    loss: str = _DEFAULTS["loss"].default
    num_sampled: int = _DEFAULTS["num_sampled"].default
    history_length: int = _DEFAULTS["history_length"].default
    ensemble: int = _DEFAULTS["ensemble"].default
    history_id_dim: int = _DEFAULTS["history_id_dim"].default
    item_id_embedding: bool = _DEFAULTS["item_id_embedding"].default
    id_dropout: float = _DEFAULTS["id_dropout"].default
    hidden_units: int = _DEFAULTS["hidden_units"].default
    mask_history: bool = _DEFAULTS["mask_history"].default
    history_pooling: str = _DEFAULTS["history_pooling"].default
    finetune_bert: str = _DEFAULTS["finetune_bert"].default
    finetune_bert_layers: int = _DEFAULTS["finetune_bert_layers"].default
    jit_compile: str = _DEFAULTS["jit_compile"].default
    mixed_precision: str = _DEFAULTS["mixed_precision"].default
    ranking_loss_weight: float = _DEFAULTS["ranking_loss_weight"].default

    @classmethod
    def from_settings(cls, cfg: Any, **overrides: Any) -> TrainOptions:
        """Defaults, replaced by same-named ``cfg`` fields (if the settings have them), then ``overrides``."""
        names = [f.name for f in fields(cls)]
        values = {n: getattr(cfg, n) for n in names if hasattr(cfg, n)}
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TrainingError(f"unknown training options {unknown}; known: {names}.")
        return cls(**{**values, **overrides})


@dataclass
class TrainedModel:
    """A trained user tower plus the precomputed item matrix (row i is ``item_ids[i]``): L2-normalised rows, but
    for a last column with the ``popularity_prior`` (``with_popularity_prior``) when that is on."""

    user_tower: Any
    item_tower: Any
    item_ids: np.ndarray
    item_embeddings: np.ndarray
    user_feature_names: list[str]
    item_feature_names: list[str]
    history: list[float] = field(default_factory=list)
    ranking_history: list[float] = field(default_factory=list)  # mean ranking BCE per epoch (ranking loss on)
    history_length: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    train_seconds: float = 0.0
    examples: int = 0


def _stats(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return matrix.mean(axis=0), matrix.var(axis=0)


def _auto(flag: str, name: str) -> bool:
    if flag not in ("auto", "on", "off"):
        raise TrainingError(f"training option {name} is {flag!r}; use 'auto', 'on' or 'off'.")
    return bool(gpus()) if flag == "auto" else flag == "on"


def _check_cfg(cfg: ModelSettings, opts: TrainOptions) -> None:
    for name in ("epochs", "batch_size", "embedding_dim"):
        if getattr(cfg, name) < 1:
            raise TrainingError(f"model.{name} is {getattr(cfg, name)}; it must be a positive integer.")
    if cfg.learning_rate <= 0 or cfg.temperature <= 0:
        raise TrainingError("model.learning_rate and model.temperature must be > 0 (e.g. 0.01 and 0.1).")
    if opts.loss not in LOSSES:
        raise TrainingError(f"training option loss is {opts.loss!r}; choose one of {LOSSES}.")
    if opts.history_length < 0 or opts.history_id_dim < 0 or opts.num_sampled < 0:
        raise TrainingError("history_length, history_id_dim and num_sampled must be >= 0.")
    if not 0.0 <= opts.id_dropout < 1.0:
        raise TrainingError(f"id_dropout is {opts.id_dropout}; it must be in [0, 1).")
    if not (np.isfinite(opts.ranking_loss_weight) and opts.ranking_loss_weight >= 0):
        raise TrainingError(f"ranking_loss_weight is {opts.ranking_loss_weight}; it must be >= 0 (0: off).")


@dataclass(frozen=True)
class _Plan:
    """Everything the model build needs, decided before entering the strategy scope."""

    user_vocab: np.ndarray
    item_vocab: np.ndarray
    catalog: dict[str, np.ndarray]
    finetune: bool
    loss: str


def _text_catalog(items: data.ItemTable, cfg: ModelSettings, opts: TrainOptions) -> tuple[dict[str, Any], bool]:
    """The item text part of the catalog: frozen embeddings, or tokens when BERT is fine-tuned."""
    if not _auto(opts.finetune_bert, "finetune_bert") or opts.finetune_bert_layers == 0:
        return {ITEM_EMBEDDING: items.text_embeddings}, False
    if items.texts is None:
        if opts.finetune_bert == "on":
            raise TrainingError("finetune_bert is 'on' but items_df has no 'text' column: pass the item texts.")
        log.warning("a GPU is visible but items_df has no 'text' column: training on frozen text embeddings")
        return {ITEM_EMBEDDING: items.text_embeddings}, False
    from recsys.model.encoder import load_encoder

    encoder = load_encoder(cfg.bert_checkpoint, cfg.max_length)
    tokens = encoder.tokenizer(
        items.texts, padding="max_length", truncation=True, max_length=cfg.max_length, return_tensors="np"
    )
    catalog = {
        TOKEN_IDS: tokens["input_ids"].astype(np.int32),
        PADDING_MASK: tokens["attention_mask"].astype(np.int32),
        "_backbone": encoder.backbone,
    }
    return catalog, True


def _plan(pairs: data.Interactions, items: data.ItemTable, cfg: ModelSettings, opts: TrainOptions) -> _Plan:
    catalog, finetune = _text_catalog(items, cfg, opts)
    catalog[ITEM_FEATURES] = items.features
    item_vocab = np.unique(items.item_ids[pairs.item_rows]) if opts.item_id_embedding else np.zeros(0, np.int64)
    if opts.item_id_embedding:
        catalog[ITEM_INDEX] = data.index_of(item_vocab, items.item_ids)
    loss = opts.loss
    if finetune and loss == "full_catalog":
        log.info("fine-tuning BERT: full-catalog softmax would run BERT over every item per step; using mixed")
        loss = "mixed"
    return _Plan(np.unique(pairs.user_ids), item_vocab, catalog, finetune, loss)


def _ranking_impressions(
    impressions_df: pd.DataFrame | None,
    train_df: pd.DataFrame,
    items: data.ItemTable,
    user_names: list[str],
    opts: TrainOptions,
) -> data.LabelledImpressions | None:
    """The labelled impressions of the ranking loss (None when it is off)."""
    if not opts.ranking_loss_weight:
        if impressions_df is not None and len(impressions_df):
            log.info("ranking_loss_weight is 0: ignoring %d labelled impressions", len(impressions_df))
        return None
    if impressions_df is None or impressions_df.empty:
        raise TrainingError(
            f"ranking_loss_weight is {opts.ranking_loss_weight} but no labelled impressions were passed: pass "
            "impressions_df (training_set.build returns TrainingData.impressions when model.ranking_loss_weight > 0) "
            "or set model.ranking_loss_weight to 0."
        )
    ranked = data.labelled_impressions(impressions_df, items, user_names, opts.history_length, train_df)
    rate = float(ranked.labels.mean())
    log.info("ranking loss: %d labelled impressions, %.1f%% positive", len(ranked.labels), 100 * rate)
    if rate in (0.0, 1.0):
        log.warning("ranking loss: every impression has label %d; the BCE term learns only its bias", int(rate))
    return ranked


def _log_odds(labels: np.ndarray) -> float:
    """The labels' log-odds (clipped), the ranking bias's starting value: the loss starts at the base rate."""
    rate = float(np.clip(labels.mean(), 1e-3, 1 - 1e-3))
    return float(np.log(rate / (1 - rate)))


def _build_model(
    pairs: data.Interactions,
    items: data.ItemTable,
    cfg: ModelSettings,
    opts: TrainOptions,
    plan: _Plan,
    ranked: data.LabelledImpressions | None = None,
) -> TwoTowerModel:
    user_core = build_user_core(
        len(plan.user_vocab),
        pairs.user_features.shape[1],
        cfg.embedding_dim,
        _stats(pairs.user_features),
        items.text_embeddings,
        opts.history_length,
        opts.history_id_dim,
        opts.hidden_units,
        opts.history_pooling == "position",
        opts.history_pooling == "attention",
    )
    catalog = dict(plan.catalog)
    n_ids = len(plan.item_vocab)
    if plan.finetune:
        item_core = build_bert_item_core(
            catalog.pop("_backbone"),
            opts.finetune_bert_layers,
            cfg.max_length,
            items.features.shape[1],
            cfg.embedding_dim,
            _stats(items.features),
            n_ids,
            opts.hidden_units,
        )
    else:
        item_core = build_item_core(
            items.text_embeddings.shape[1],
            items.features.shape[1],
            cfg.embedding_dim,
            _stats(items.features),
            n_ids,
            opts.hidden_units,
        )
    model = TwoTowerModel(
        user_core,
        item_core,
        catalog,
        cfg.temperature,
        loss=plan.loss,
        num_sampled=opts.num_sampled,
        id_dropout=opts.id_dropout,
        seed=cfg.seed,
        mask_history=opts.mask_history,
        ranking_weight=opts.ranking_loss_weight if ranked is not None else 0.0,
        ranking_bias=_log_odds(ranked.labels) if ranked is not None else 0.0,
        name="two_tower",
    )
    # XLA: the towers' hash-table lookups run outside the step (data.index_of), so the step compiles.
    model.compile(optimizer=_optimizer(cfg), jit_compile=_auto(opts.jit_compile, "jit"))
    return model


def _optimizer(cfg: ModelSettings) -> Any:
    """Adam, or AdamW when ``cfg.weight_decay`` > 0; with a weight average when ``cfg.ema_momentum`` > 0.

    ``fit`` swaps the averaged weights in when training ends (``finalize_variable_values``).
    """
    ema = {"use_ema": cfg.ema_momentum > 0, "ema_momentum": cfg.ema_momentum or 0.99}
    if cfg.weight_decay > 0:
        return keras.optimizers.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay, **ema)
    return keras.optimizers.Adam(cfg.learning_rate, **ema)


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


def _precision_policy(opts: TrainOptions) -> str:
    if _auto(opts.mixed_precision, "mixed_precision"):
        return "mixed_float16"
    return keras.mixed_precision.dtype_policy().name


def train(
    train_df: pd.DataFrame,
    items_df: pd.DataFrame,
    user_feature_names: Sequence[str],
    item_feature_names: Sequence[str],
    cfg: ModelSettings,
    *,
    options: TrainOptions | None = None,
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
    else derived from ``train_df``), needed when ``ranking_loss_weight > 0`` and ignored otherwise.
    Seeded by ``cfg.seed``; CPU unless a GPU is visible, then ``MirroredStrategy``, mixed precision, XLA.
    ``cfg.ensemble`` n > 1 trains n members on the same inputs (seeds ``cfg.seed + k``; ``callbacks`` see
    each member's fit) and returns them joined into one model (``join_members``).
    """
    opts = options or TrainOptions.from_settings(cfg)
    _check_cfg(cfg, opts)
    user_names, item_names = list(user_feature_names), list(item_feature_names)
    items = data.item_table(items_df, item_names)
    pairs = data.interactions(train_df, items, user_names, opts.history_length)
    ranked = _ranking_impressions(impressions_df, train_df, items, user_names, opts)
    members = []
    for k in range(opts.ensemble):
        if opts.ensemble > 1:
            log.info("training ensemble member %d of %d (seed %d)", k + 1, opts.ensemble, cfg.seed + k)
        member_cfg = cfg.model_copy(update={"seed": cfg.seed + k})
        members.append(_train_member(pairs, items, ranked, member_cfg, opts, callbacks, (user_names, item_names)))
    model = members[0] if len(members) == 1 else join_members(members)
    if cfg.popularity_prior > 0:
        model = with_popularity_prior(model, train_df, cfg.popularity_prior)
    return model


def _train_member(
    pairs: data.Interactions,
    items: data.ItemTable,
    ranked: data.LabelledImpressions | None,
    cfg: ModelSettings,
    opts: TrainOptions,
    callbacks: Sequence[Any],
    names: tuple[list[str], list[str]],
) -> TrainedModel:
    """One two-tower model (seeded by ``cfg.seed``) on prepared inputs; see ``train``."""
    user_names, item_names = names
    keras.utils.set_random_seed(cfg.seed)
    _check_average(cfg, len(pairs.user_ids))
    previous_policy = keras.mixed_precision.dtype_policy().name
    keras.mixed_precision.set_dtype_policy(_precision_policy(opts))
    started = time.perf_counter()
    try:
        # Under the policy: a fine-tuned BERT backbone is built here and must compute in float16 too.
        plan = _plan(pairs, items, cfg, opts)
        with distribution_strategy().scope():
            model = _build_model(pairs, items, cfg, opts, plan, ranked)
        arrays = data.training_arrays(pairs, plan.user_vocab, items.item_ids)
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
        if opts.id_dropout == 0:
            set_oov_to_mean(model.user_core)
        vectors = _item_matrix(model, len(items.item_ids))
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
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
        user_feature_names=list(user_names),
        item_feature_names=list(item_names),
        history=losses,
        ranking_history=ranking_losses,
        history_length=opts.history_length,
        options={**asdict(opts), "loss": plan.loss, "finetuned_bert": plan.finetune},
        train_seconds=seconds,
        examples=len(pairs.user_ids) * cfg.epochs,
    )


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
        user_tower=_joined([m.user_tower for m in members], scale, "user_tower"),
        item_tower=_joined([m.item_tower for m in members], scale, "item_tower"),
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


def _inputs_like(model: Any) -> dict[str, Any]:
    """Fresh ``keras.Input``s with the names, shapes and dtypes of ``model``'s dict inputs (to wrap it)."""
    return {k: keras.Input(shape=t.shape[1:], dtype=t.dtype, name=k) for k, t in model.input.items()}


def _joined(models: Sequence[Any], scale: float, name: str) -> Any:
    """A model that feeds the same inputs to every member model and concatenates their outputs x ``scale``."""
    inputs = _inputs_like(models[0])
    outputs = []
    for k, model in enumerate(models):
        model.name = f"{name}_{k}"
        outputs.append(model(inputs))
    joined = keras.layers.Concatenate(name=f"{name}_members")(outputs)
    return keras.Model(inputs, keras.layers.Rescaling(scale, name=f"{name}_mean")(joined), name=name)


def _item_matrix(model: TwoTowerModel, n_items: int, chunk: int = 4096) -> np.ndarray:
    """The item core over every catalog row (no dropout), float32 ``[M, d]``."""
    out = [
        keras.ops.convert_to_numpy(model.item_vectors(np.arange(lo, min(lo + chunk, n_items), dtype=np.int32)))
        for lo in range(0, n_items, chunk)
    ]
    return np.concatenate(out).astype(np.float32)


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


# --- artifact ---------------------------------------------------------------------------------------


def _manifest(trained: TrainedModel, metadata: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise TrainingError(f"artifact metadata lacks {missing}; the model artifact contract requires them.")
    return {
        **metadata,
        "user_feature_names": trained.user_feature_names,
        "item_feature_names": trained.item_feature_names,
        "training_loss": trained.history,
        # User tower input recent_item_ids: int64 [B, history_length], newest first, padded with PAD_ITEM_ID.
        "history_length": trained.history_length,
        "recent_item_pad": PAD_ITEM_ID,
        "training_options": trained.options,
    }


def export_artifact(
    trained: TrainedModel, out_dir: Path, popular_item_ids: Sequence[int] | np.ndarray, metadata: Mapping[str, Any]
) -> Path:
    """Write ``trained`` as a model artifact into ``out_dir`` (``recsys.artifact.write_artifact``)."""
    try:
        write_artifact(
            Path(out_dir),
            trained.user_tower,
            trained.item_ids,
            trained.item_embeddings,
            popular_item_ids,
            _manifest(trained, metadata),
        )
    except ArtifactError as exc:
        raise TrainingError(str(exc)) from exc
    log.info("exported model artifact to %s", out_dir)
    return Path(out_dir)


# --- scoring (recsys.scoring) ------------------------------------------------------------------------


def top_k(scores: np.ndarray, item_ids: np.ndarray, k: int, exclude: set[int] | None = None) -> Ranked:
    """The ``k`` best-scored items of one score row, skipping ``exclude``; ties keep item order."""
    item_ids = np.asarray(item_ids, np.int64)
    cols = top_k_indices(scores, k, columns_of(item_ids)(exclude) if exclude else None)
    return Ranked(item_ids[cols], np.asarray(scores, np.float32)[cols])


def recommend(
    artifact: ModelArtifact | TrainedModel,
    user_ids: Sequence[int] | np.ndarray,
    user_features: np.ndarray,
    k: int,
    exclude: Mapping[int, set[int]] | None = None,
    recent_item_ids: Sequence[Any] | None = None,
) -> list[Ranked]:
    """Top-``k`` items per user (``Scorer.rank``); ``exclude[user_id]`` items are skipped."""
    exclude = exclude or {}
    skips = [exclude.get(int(u)) for u in user_ids]
    return Scorer(artifact).rank(user_ids, user_features, k, recent_item_ids, skips)


def latest_user_features(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Each user's most recent feature values in ``frame`` (by ``event_timestamp``), indexed by user_id."""
    latest = frame.sort_values("event_timestamp").drop_duplicates("user_id", keep="last")
    return latest.set_index("user_id")[list(names)]


def model_scorer(
    trained: TrainedModel | ModelArtifact,
    features_by_user: pd.DataFrame,
    recent_items: Mapping[int, Sequence[int]] | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """A score function for ``evaluate``: user ids ``[U]`` -> scores ``[U, n_items]`` in item_ids order.

    ``features_by_user`` is indexed by user_id with the user feature columns in tower order; users
    without a row get 0 for every feature (as at training for a missing feature row). Recent items come
    from ``recent_items`` (``{user_id: [item ids, newest first]}``, e.g. ``data.recent_items_by_user``) or
    else a ``recent_item_ids`` column of ``features_by_user``; a user with neither has no history.
    """
    frame = features_by_user
    if recent_items is None and RECENT_ITEM_IDS in frame.columns:
        recent_items = {int(u): v for u, v in frame[RECENT_ITEM_IDS].items() if v is not None}
    frame = frame.drop(columns=[RECENT_ITEM_IDS], errors="ignore")
    history = recent_items or {}
    scorer = Scorer(trained)

    def score(user_ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(user_ids, np.int64)
        feats = frame.reindex(ids).fillna(0.0).to_numpy(np.float32)
        lists = [history.get(int(u)) for u in ids]
        return scorer.scores(scorer.user_vectors(ids, feats, lists))

    return score
