"""The model artifact contract (docs/contracts.md, "Model artifact"): its files, the user tower's inputs and the
manifest, written by training and read, through :func:`load_artifact` only, by evaluation, the promotion gate,
the registry and the service.

Files: ``user_tower.keras`` (Keras 3, built-in layers only), ``item_ids.npy`` (int64 ``[N]``),
``item_embeddings.npy`` (float32 ``[N, d]``: L2-normalised rows, but for a last popularity-prior column when the
model has one), ``popular_item_ids.npy`` (int64, most popular first: the fallback), ``manifest.json``.

User tower inputs: ``user_id`` int64 ``[B]``, ``user_features`` float32 ``[B, F]`` (the manifest's
``user_feature_names`` order) and, when the manifest's ``history_length`` R > 0, ``recent_item_ids`` int64
``[B, R]``, newest first, padded with ``PAD_ITEM_ID``; its output float32 ``[B, d]`` scores items by
``output @ item_embeddings.T`` (``recsys.scoring``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import ArtifactError

USER_TOWER = "user_tower.keras"
ITEM_IDS = "item_ids.npy"
ITEM_EMBEDDINGS = "item_embeddings.npy"
POPULAR_ITEM_IDS = "popular_item_ids.npy"
MANIFEST = "manifest.json"
ARTIFACT_FILES: tuple[str, ...] = (USER_TOWER, ITEM_IDS, ITEM_EMBEDDINGS, POPULAR_ITEM_IDS, MANIFEST)
ARTIFACT_FORMAT = 1

USER_ID = "user_id"
USER_FEATURES = "user_features"
RECENT_ITEM_IDS = "recent_item_ids"
PAD_ITEM_ID = -1

# What the training caller must pass at export (``metrics`` is added by the evaluate stage afterwards).
REQUIRED_METADATA: tuple[str, ...] = (
    "data_interval_start",
    "data_interval_end",
    "feature_service",
    "dataset_fingerprint",
    "code_version",
    "bert_checkpoint",
)
# What a reader cannot work without.
REQUIRED_MANIFEST_KEYS: tuple[str, ...] = ("user_feature_names",)


def catalog_fingerprint(item_ids: np.ndarray, item_embeddings: np.ndarray) -> str:
    """A short hash of the item ids and their vectors: a bento and its online store must agree on it."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(item_ids, np.int64).tobytes())
    digest.update(np.ascontiguousarray(item_embeddings, np.float32).tobytes())
    return digest.hexdigest()[:16]


def pad_recent(lists: Sequence[Any], length: int) -> np.ndarray:
    """Lists of item ids (newest first) -> int64 ``[N, length]``: truncated, padded with ``PAD_ITEM_ID``."""
    out = np.full((len(lists), length), PAD_ITEM_ID, np.int64)
    for i, ids in enumerate(lists):
        if ids is None or (isinstance(ids, float) and np.isnan(ids)):
            continue
        values = np.asarray(ids, np.int64).reshape(-1)[:length]
        out[i, : len(values)] = values
    return out


def check_artifact_dir(directory: Path) -> None:
    """Raise :class:`ArtifactError` unless ``directory`` holds every file of a model artifact."""
    if not directory.is_dir():
        raise ArtifactError(f"Model artifact {directory} is not a directory: pass the folder the training step wrote.")
    missing = [name for name in ARTIFACT_FILES if not (directory / name).exists()]
    if missing:
        raise ArtifactError(
            f"Model artifact {directory} lacks {', '.join(missing)}: re-run training, which writes "
            f"{', '.join(ARTIFACT_FILES)}."
        )


def read_manifest(directory: Path) -> dict[str, Any]:
    """The artifact's ``manifest.json`` as a dict, checked for the keys readers need."""
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist: the artifact is incomplete; re-run training.") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}): re-run training to rewrite it.") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path} must hold a JSON object, found {type(manifest).__name__}.")
    missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in manifest]
    if missing:
        raise ArtifactError(f"{path} lacks {', '.join(missing)}: the training step must record them.")
    names = manifest["user_feature_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ArtifactError(f"{path}: user_feature_names must be a list of feature names (strings).")
    return manifest


@dataclass
class ModelArtifact:
    """A loaded model artifact: the user tower (a Keras model), the item matrix, its ids, the fallback, the
    manifest. Score it with :class:`recsys.scoring.Scorer`."""

    user_tower: Any
    item_ids: np.ndarray
    item_embeddings: np.ndarray
    popular_item_ids: np.ndarray
    manifest: dict[str, Any]
    directory: Path | None = None

    @property
    def user_feature_names(self) -> list[str]:
        return list(self.manifest["user_feature_names"])

    @property
    def feature_service(self) -> str | None:
        """The Feast feature service the model was trained with (and must be served with)."""
        value = self.manifest.get("feature_service")
        return str(value) if value else None

    @property
    def history_length(self) -> int:
        return int(self.manifest.get("history_length", 0))

    @property
    def catalog_fingerprint(self) -> str:
        return catalog_fingerprint(self.item_ids, self.item_embeddings)


def write_artifact(
    out_dir: Path,
    user_tower: Any,
    item_ids: np.ndarray,
    item_embeddings: np.ndarray,
    popular_item_ids: Sequence[int] | np.ndarray,
    manifest: Mapping[str, Any],
) -> Path:
    """Write the artifact files into ``out_dir`` (must not exist or be empty): written aside, then renamed.

    The manifest gains ``artifact_format``, ``n_items``, ``embedding_dim`` and ``catalog_fingerprint``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ArtifactError(f"{out_dir} is not empty: export each model version into a new directory.")
    ids = np.asarray(item_ids, np.int64)
    matrix = np.asarray(item_embeddings, np.float32)
    if ids.ndim != 1 or matrix.ndim != 2 or matrix.shape[0] != ids.shape[0]:
        raise ArtifactError(f"item_ids {ids.shape} and item_embeddings {matrix.shape} must be [N] and [N, d].")
    full = {
        **manifest,
        "artifact_format": ARTIFACT_FORMAT,
        "n_items": int(ids.shape[0]),
        "embedding_dim": int(matrix.shape[1]),
        "catalog_fingerprint": catalog_fingerprint(ids, matrix),
    }
    missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in full]
    if missing:
        raise ArtifactError(f"the manifest lacks {missing}; the model artifact contract requires them.")
    try:
        text = json.dumps(full, indent=2, sort_keys=True)
    except TypeError as exc:
        raise ArtifactError(f"artifact metadata is not JSON-serialisable ({exc}): pass str/number/list/dict.") from exc
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    user_tower.save(tmp / USER_TOWER)
    np.save(tmp / ITEM_IDS, ids)
    np.save(tmp / ITEM_EMBEDDINGS, matrix)
    np.save(tmp / POPULAR_ITEM_IDS, np.asarray(popular_item_ids, np.int64))
    (tmp / MANIFEST).write_text(text)
    if out_dir.exists():
        out_dir.rmdir()
    os.replace(tmp, out_dir)
    return out_dir


def load_artifact(directory: Path) -> ModelArtifact:
    """Load and check an artifact: every file there, shapes that agree, a tower whose output fits the items."""
    directory = Path(directory)
    check_artifact_dir(directory)
    manifest = read_manifest(directory)
    item_ids = np.load(directory / ITEM_IDS, allow_pickle=False)
    embeddings = np.load(directory / ITEM_EMBEDDINGS, allow_pickle=False)
    popular = np.load(directory / POPULAR_ITEM_IDS, allow_pickle=False)
    if item_ids.ndim != 1 or embeddings.ndim != 2 or embeddings.shape[0] != item_ids.shape[0]:
        raise ArtifactError(
            f"{directory}: item_ids {item_ids.shape} and item_embeddings {embeddings.shape} must be [N] and "
            "[N, d] with the same N; re-run training."
        )
    if popular.ndim != 1 or popular.size == 0:
        raise ArtifactError(f"{directory}: popular_item_ids must be a non-empty 1-D array; re-run training.")
    recorded = manifest.get("catalog_fingerprint")
    artifact = ModelArtifact(
        user_tower=_load_tower(directory / USER_TOWER),
        item_ids=item_ids.astype(np.int64),
        item_embeddings=np.ascontiguousarray(embeddings, np.float32),
        popular_item_ids=popular.astype(np.int64),
        manifest=manifest,
        directory=directory,
    )
    if recorded is not None and recorded != artifact.catalog_fingerprint:
        raise ArtifactError(
            f"{directory}: item_ids/item_embeddings do not match the manifest's catalog_fingerprint {recorded}: "
            "the files were changed after export; re-run training."
        )
    width = int(artifact.user_tower.output.shape[-1])
    if width != embeddings.shape[1]:
        raise ArtifactError(
            f"{directory}: the user tower outputs {width} columns, the item embeddings have {embeddings.shape[1]}: "
            "the towers do not match; re-run training."
        )
    return artifact


def _load_tower(path: Path) -> Any:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # the towers are trained and saved on TensorFlow
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many kinds (ValueError, OSError, TypeError) for a bad file
        raise ArtifactError(f"cannot load the user tower {path}: {exc}. Re-run training to rewrite it.") from exc
