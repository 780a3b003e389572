"""Answer "top k items for this user" from a model artifact: user tower + dot product, or popularity fallback.

Plain Python (numpy + Keras), no BentoML: the bento's service, the CLI and tests call the same class.
Score = dot(user vector, item_embeddings); items come back as ``item_ids[argsort(-score)][:k]``
(docs/contracts.md, "Tensor interfaces"). An unknown user (not in the tower's id vocabulary) or a user
without features is answered from ``popular_item_ids.npy`` with ``fallback=True`` and a reason.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.errors import RecsysError
from recsys.serving.artifact import (
    ITEM_EMBEDDINGS,
    ITEM_IDS,
    POPULAR_ITEM_IDS,
    USER_TOWER,
    ArtifactError,
    check_artifact_dir,
    read_manifest,
)

log = logging.getLogger(__name__)

MIN_K = 1
MAX_K = 100

REASON_NO_FEATURES = "no online features for this user"
REASON_UNKNOWN_USER = "user is not in the model's user vocabulary"


class InvalidRequest(RecsysError, ValueError):
    """A recommendation request is malformed (k out of range, wrong feature count, ...)."""


@dataclass(frozen=True)
class Recommendation:
    """Top-k items for one user; ``fallback`` says they came from popularity, ``fallback_reason`` why.

    For a fallback, ``scores`` are reciprocal popularity ranks (1, 1/2, 1/3, ...), not model scores.
    """

    user_id: int
    item_ids: list[int]
    scores: list[float]
    fallback: bool
    model_version: str
    fallback_reason: str | None = field(default=None)


def validate_k(k: object) -> int:
    """Return ``k`` if it is an integer in ``[MIN_K, MAX_K]``, else raise :class:`InvalidRequest`."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise InvalidRequest(f"k must be an integer between {MIN_K} and {MAX_K}, got {k!r}.")
    if not MIN_K <= int(k) <= MAX_K:
        raise InvalidRequest(f"k must be between {MIN_K} and {MAX_K}, got {k}: ask for fewer items.")
    return int(k)


def _walk_layers(layer: Any) -> list[Any]:
    """Every layer nested in ``layer`` (depth first), ``layer`` included."""
    found = [layer]
    for child in getattr(layer, "layers", []) or []:
        found.extend(_walk_layers(child))
    return found


def user_vocabulary(tower: Any) -> frozenset[int] | None:
    """The user ids the tower knows (its ``IntegerLookup`` vocabulary), or None if it has no single one."""
    import keras

    lookups = [layer for layer in _walk_layers(tower) if isinstance(layer, keras.layers.IntegerLookup)]
    if len(lookups) > 1:
        lookups = [layer for layer in lookups if "user" in layer.name] or lookups
    if len(lookups) != 1:
        log.warning("user tower has %d IntegerLookup layers: treating every user id as known", len(lookups))
        return None
    vocabulary = lookups[0].get_vocabulary(include_special_tokens=False)
    return frozenset(int(v) for v in vocabulary)


class Recommender:
    """A loaded model artifact that answers top-k requests."""

    def __init__(self, artifact_dir: Path, model_version: str | None = None) -> None:
        """Load the artifact in ``artifact_dir``; ``model_version`` (e.g. the registry tag) labels answers."""
        artifact_dir = Path(artifact_dir)
        check_artifact_dir(artifact_dir)
        self.manifest: dict[str, Any] = read_manifest(artifact_dir)
        self.feature_names: list[str] = list(self.manifest["user_feature_names"])
        self.model_version: str = model_version or str(self.manifest.get("model_version") or artifact_dir.name)
        self.item_ids, self.item_embeddings, self.popular_item_ids = _load_arrays(artifact_dir)
        self._tower = _load_tower(artifact_dir / USER_TOWER)
        self.known_users = user_vocabulary(self._tower)
        self._check_tower_output()

    @property
    def feature_service(self) -> str | None:
        """The Feast feature service the model was trained with (manifest ``feature_service``)."""
        value = self.manifest.get("feature_service")
        return str(value) if value else None

    def is_known(self, user_id: int) -> bool:
        """Whether the tower has an embedding for ``user_id`` (True when the vocabulary is not inspectable)."""
        return self.known_users is None or int(user_id) in self.known_users

    def user_vector(
        self, user_id: int, user_features: Sequence[float], recent_items: Sequence[int] | None = None
    ) -> np.ndarray:
        """The tower's vector for one user, float32 ``[d]`` (L2-normalised; with a popularity prior, but for
        its last column, a constant 1).

        A tower with a ``recent_item_ids`` input gets the user's recent positives (newest first), cut to the
        manifest's ``history_length`` and padded with ``recent_item_pad`` (-1).
        """
        import keras

        features = self._feature_row(user_features)
        inputs = {
            "user_id": np.asarray([int(user_id)], dtype=np.int64),
            "user_features": features[np.newaxis, :],
        }
        if "recent_item_ids" in self._tower_inputs():
            length = int(self.manifest.get("history_length", 10))
            pad = int(self.manifest.get("recent_item_pad", -1))
            recent = [int(i) for i in (recent_items or [])][:length]
            inputs["recent_item_ids"] = np.asarray([recent + [pad] * (length - len(recent))], dtype=np.int64)
        return np.asarray(keras.ops.convert_to_numpy(self._tower(inputs, training=False))[0], dtype=np.float32)

    def _tower_inputs(self) -> set[str]:
        struct = getattr(self._tower, "_inputs_struct", None)  # a dict-input functional model keeps its keys
        names = set(struct) if isinstance(struct, dict) else set()
        return names | {str(t.name) for t in self._tower.inputs}

    def recommend(
        self,
        user_id: int,
        k: int = 10,
        user_features: Sequence[float] | None = None,
        recent_items: Sequence[int] | None = None,
    ) -> Recommendation:
        """Top ``k`` items for ``user_id``: model scores if the user is known and has features, else popular."""
        k = validate_k(k)
        if isinstance(user_id, bool) or not isinstance(user_id, int | np.integer):
            raise InvalidRequest(f"user_id must be an integer, got {user_id!r}.")
        if user_features is None:
            return self.popular(int(user_id), k, REASON_NO_FEATURES)
        if not self.is_known(int(user_id)):
            return self.popular(int(user_id), k, REASON_UNKNOWN_USER)
        scores = self.item_embeddings @ self.user_vector(int(user_id), user_features, recent_items)
        top = np.argsort(-scores, kind="stable")[:k]
        return Recommendation(
            user_id=int(user_id),
            item_ids=[int(i) for i in self.item_ids[top]],
            scores=[float(s) for s in scores[top]],
            fallback=False,
            model_version=self.model_version,
        )

    def popular(self, user_id: int, k: int, reason: str) -> Recommendation:
        """The ``k`` most popular items, flagged as a fallback with ``reason``."""
        k = validate_k(k)
        items = [int(i) for i in self.popular_item_ids[:k]]
        return Recommendation(
            user_id=int(user_id),
            item_ids=items,
            scores=[1.0 / (rank + 1) for rank in range(len(items))],
            fallback=True,
            model_version=self.model_version,
            fallback_reason=reason,
        )

    def _feature_row(self, user_features: Sequence[float]) -> np.ndarray:
        values = list(user_features)
        if len(values) != len(self.feature_names):
            raise InvalidRequest(
                f"expected {len(self.feature_names)} user features ({', '.join(self.feature_names)}), "
                f"got {len(values)}: pass them in the manifest's user_feature_names order."
            )
        if not all(isinstance(v, int | float | np.number) and math.isfinite(float(v)) for v in values):
            raise InvalidRequest(f"user features must be finite numbers, got {values!r}.")
        return np.asarray(values, dtype=np.float32)

    def _check_tower_output(self) -> None:
        probe_user = min(self.known_users) if self.known_users else 0
        vector = self.user_vector(probe_user, [0.0] * len(self.feature_names))
        if vector.shape != (self.item_embeddings.shape[1],):
            raise ArtifactError(
                f"user tower outputs shape {vector.shape}, item embeddings have dimension "
                f"{self.item_embeddings.shape[1]}: the artifact's towers do not match; re-run training."
            )


def _load_arrays(directory: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    return item_ids.astype(np.int64), embeddings.astype(np.float32), popular.astype(np.int64)


def _load_tower(path: Path) -> Any:
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many kinds (ValueError, OSError, TypeError) for a bad file
        raise ArtifactError(f"cannot load the user tower {path}: {exc}. Re-run training to rewrite it.") from exc
