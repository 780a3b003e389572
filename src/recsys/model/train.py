"""Train the two-tower model, export/load the model artifact, and recommend from it.

Artifact files (docs/contracts.md "Model artifact"): ``user_tower.keras``, ``item_ids.npy`` (int64),
``item_embeddings.npy`` (float32, L2-normalised), ``popular_item_ids.npy`` (int64, most popular first),
``manifest.json`` (the caller's metadata + ``user_feature_names`` + shapes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from recsys.config import ModelSettings
from recsys.errors import RegistryError, TrainingError
from recsys.model import data
from recsys.model.backend import distribution_strategy, gpus
from recsys.model.two_tower import (
    USER_FEATURES,
    USER_ID,
    TwoTowerModel,
    build_item_tower,
    build_user_tower,
    keras,
    set_oov_to_mean,
)

log = logging.getLogger(__name__)

ARTIFACT_FILES = (
    "user_tower.keras",
    "item_ids.npy",
    "item_embeddings.npy",
    "popular_item_ids.npy",
    "manifest.json",
)
# ``metrics`` is part of the contract too, but the evaluate stage adds it to manifest.json after export.
REQUIRED_METADATA = (
    "data_interval_start",
    "data_interval_end",
    "feature_service",
    "dataset_fingerprint",
    "code_version",
    "bert_checkpoint",
)
ARTIFACT_FORMAT = 1


@dataclass
class TrainedModel:
    """A trained user tower plus the precomputed, L2-normalised item matrix (row i is ``item_ids[i]``)."""

    user_tower: Any
    item_tower: Any
    item_ids: np.ndarray
    item_embeddings: np.ndarray
    user_feature_names: list[str]
    item_feature_names: list[str]
    history: list[float] = field(default_factory=list)


def _stats(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return matrix.mean(axis=0), matrix.var(axis=0)


def _build_model(pairs: data.Interactions, items: data.ItemTable, cfg: ModelSettings) -> TwoTowerModel:
    user_tower = build_user_tower(
        np.unique(pairs.user_ids), pairs.user_features.shape[1], cfg.embedding_dim, _stats(pairs.user_features)
    )
    item_tower = build_item_tower(
        items.text_embeddings.shape[1], items.features.shape[1], cfg.embedding_dim, _stats(items.features)
    )
    model = TwoTowerModel(user_tower, item_tower, cfg.temperature, name="two_tower")
    # jit_compile off: the IntegerLookup hash table inside the user tower cannot be XLA-compiled.
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), jit_compile=False)
    return model


def _check_cfg(cfg: ModelSettings) -> None:
    for name in ("epochs", "batch_size", "embedding_dim"):
        if getattr(cfg, name) < 1:
            raise TrainingError(f"model.{name} is {getattr(cfg, name)}; it must be a positive integer.")
    if cfg.learning_rate <= 0 or cfg.temperature <= 0:
        raise TrainingError("model.learning_rate and model.temperature must be > 0 (e.g. 0.01 and 0.1).")


def _precision_policy() -> str:
    return "mixed_float16" if gpus() else keras.mixed_precision.dtype_policy().name


def train(
    train_df: pd.DataFrame,
    items_df: pd.DataFrame,
    user_feature_names: Sequence[str],
    item_feature_names: Sequence[str],
    cfg: ModelSettings,
) -> TrainedModel:
    """Train the two-tower model on positive interactions and precompute the item matrix.

    ``train_df``: one row per positive interaction (``user_id``, ``item_id``, ``event_timestamp`` + the
    user feature columns as of the interaction). ``items_df``: one row per candidate item (``item_id``,
    ``embedding`` + the item feature columns). Seeded by ``cfg.seed``; CPU unless a GPU is visible, then
    ``MirroredStrategy`` + mixed precision.
    """
    _check_cfg(cfg)
    user_names, item_names = list(user_feature_names), list(item_feature_names)
    items = data.item_table(items_df, item_names)
    pairs = data.interactions(train_df, items, user_names)
    keras.utils.set_random_seed(cfg.seed)
    previous_policy = keras.mixed_precision.dtype_policy().name
    keras.mixed_precision.set_dtype_policy(_precision_policy())
    try:
        with distribution_strategy().scope():
            model = _build_model(pairs, items, cfg)
        dataset = data.training_dataset(pairs, items, cfg.batch_size, cfg.seed)
        fit = model.fit(dataset, epochs=cfg.epochs, shuffle=False, verbose=0)  # shuffled in tf.data
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
    losses = [float(v) for v in fit.history["loss"]]
    if not np.all(np.isfinite(losses)):
        raise TrainingError(f"training diverged (loss per epoch {losses}): lower model.learning_rate.")
    log.info("trained %d epochs on %d interactions: loss %s", cfg.epochs, len(pairs.user_ids), losses)
    set_oov_to_mean(model.user_tower)
    vectors = model.item_tower.predict(data.item_dataset(items, 4096), verbose=0)
    return TrainedModel(
        user_tower=model.user_tower,
        item_tower=model.item_tower,
        item_ids=items.item_ids,
        item_embeddings=_unit_rows(np.asarray(vectors, np.float32)),
        user_feature_names=user_names,
        item_feature_names=item_names,
        history=losses,
    )


def _unit_rows(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.maximum(norms, 1e-12)).astype(np.float32)


# --- artifact ---------------------------------------------------------------------------------------


@dataclass
class ModelArtifact:
    """A loaded model artifact (see the module docstring for its files)."""

    user_tower: Any
    item_ids: np.ndarray
    item_embeddings: np.ndarray
    popular_item_ids: np.ndarray
    manifest: dict[str, Any]

    @property
    def user_feature_names(self) -> list[str]:
        return list(self.manifest["user_feature_names"])


def _manifest(trained: TrainedModel, metadata: Mapping[str, Any]) -> dict[str, Any]:
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise TrainingError(f"artifact metadata lacks {missing}; the model artifact contract requires them.")
    manifest = {
        **metadata,
        "artifact_format": ARTIFACT_FORMAT,
        "user_feature_names": trained.user_feature_names,
        "item_feature_names": trained.item_feature_names,
        "embedding_dim": int(trained.item_embeddings.shape[1]),
        "n_items": len(trained.item_ids),
        "training_loss": trained.history,
    }
    try:
        json.dumps(manifest)
    except TypeError as exc:
        raise TrainingError(f"artifact metadata is not JSON-serialisable ({exc}): pass str/number/list/dict.") from exc
    return manifest


def export_artifact(
    trained: TrainedModel, out_dir: Path, popular_item_ids: Sequence[int] | np.ndarray, metadata: Mapping[str, Any]
) -> Path:
    """Write the artifact files into ``out_dir`` (must not exist or be empty); written aside, then renamed."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise TrainingError(f"{out_dir} is not empty: export each model version into a new directory.")
    manifest = _manifest(trained, metadata)
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trained.user_tower.save(tmp / "user_tower.keras")
    np.save(tmp / "item_ids.npy", np.asarray(trained.item_ids, np.int64))
    np.save(tmp / "item_embeddings.npy", np.asarray(trained.item_embeddings, np.float32))
    np.save(tmp / "popular_item_ids.npy", np.asarray(popular_item_ids, np.int64))
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if out_dir.exists():
        out_dir.rmdir()
    os.replace(tmp, out_dir)
    log.info("exported model artifact to %s", out_dir)
    return out_dir


def load_artifact(path: Path) -> ModelArtifact:
    """Load an artifact written by ``export_artifact``; checks that its files and shapes agree."""
    path = Path(path)
    missing = [f for f in ARTIFACT_FILES if not (path / f).is_file()]
    if missing:
        raise RegistryError(f"model artifact {path} lacks {missing}: re-export it with export_artifact.")
    artifact = ModelArtifact(
        user_tower=keras.saving.load_model(path / "user_tower.keras"),
        item_ids=np.load(path / "item_ids.npy"),
        item_embeddings=np.load(path / "item_embeddings.npy"),
        popular_item_ids=np.load(path / "popular_item_ids.npy"),
        manifest=json.loads((path / "manifest.json").read_text()),
    )
    if artifact.item_embeddings.shape[0] != artifact.item_ids.shape[0]:
        raise RegistryError(f"model artifact {path}: item_embeddings and item_ids disagree in length: re-export it.")
    return artifact


# --- scoring ----------------------------------------------------------------------------------------


class Ranked(NamedTuple):
    """Top-k items for one user, best first."""

    item_ids: np.ndarray
    scores: np.ndarray


def user_vectors(user_tower: Any, user_ids: Sequence[int] | np.ndarray, user_features: np.ndarray) -> np.ndarray:
    """Run the user tower: ids ``[B]`` + raw features ``[B, F]`` -> float32 ``[B, d]``."""
    ids = np.asarray(user_ids, np.int64).reshape(-1)
    feats = np.asarray(user_features, np.float32).reshape(len(ids), -1)
    expected = user_tower.input[USER_FEATURES].shape[-1]
    if feats.shape[1] != expected:
        raise ValueError(f"user_features has {feats.shape[1]} columns; the user tower expects {expected}.")
    if len(ids) == 0:
        return np.zeros((0, user_tower.output.shape[-1]), np.float32)
    out = user_tower.predict({USER_ID: ids, USER_FEATURES: feats}, batch_size=4096, verbose=0)
    return np.asarray(out, np.float32)


def top_k(scores: np.ndarray, item_ids: np.ndarray, k: int, exclude: set[int] | None = None) -> Ranked:
    """The ``k`` best-scored items of one score row, skipping ``exclude``; ties keep item order."""
    scores = scores.astype(np.float64, copy=True)
    if exclude:
        scores[np.isin(item_ids, np.fromiter(exclude, np.int64, len(exclude)))] = -np.inf
    order = np.argsort(-scores, kind="stable")[: max(k, 0)]
    order = order[np.isfinite(scores[order])]
    return Ranked(item_ids[order].astype(np.int64), scores[order].astype(np.float32))


def recommend(
    artifact: ModelArtifact | TrainedModel,
    user_ids: Sequence[int] | np.ndarray,
    user_features: np.ndarray,
    k: int,
    exclude: Mapping[int, set[int]] | None = None,
) -> list[Ranked]:
    """Top-``k`` items per user by dot(user vector, item matrix); ``exclude[user_id]`` items are skipped."""
    vectors = user_vectors(artifact.user_tower, user_ids, user_features)
    scores = vectors @ artifact.item_embeddings.T
    exclude = exclude or {}
    return [top_k(row, artifact.item_ids, k, exclude.get(int(u))) for u, row in zip(user_ids, scores, strict=True)]


def latest_user_features(frame: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Each user's most recent feature values in ``frame`` (by ``event_timestamp``), indexed by user_id."""
    latest = frame.sort_values("event_timestamp").drop_duplicates("user_id", keep="last")
    return latest.set_index("user_id")[list(names)]


def model_scorer(
    trained: TrainedModel | ModelArtifact, features_by_user: pd.DataFrame
) -> Callable[[np.ndarray], np.ndarray]:
    """A score function for ``evaluate``: user ids ``[U]`` -> scores ``[U, n_items]`` in item_ids order.

    ``features_by_user`` is indexed by user_id with the user feature columns in tower order; users
    without a row get 0 for every feature (as at training for a missing feature row).
    """

    def score(user_ids: np.ndarray) -> np.ndarray:
        feats = features_by_user.reindex(np.asarray(user_ids, np.int64)).fillna(0.0).to_numpy(np.float32)
        return user_vectors(trained.user_tower, user_ids, feats) @ trained.item_embeddings.T

    return score
