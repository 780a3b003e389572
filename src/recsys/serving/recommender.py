"""Answer "top k items for this user" from a model artifact, through the one scoring path (``recsys.scoring``).

Plain Python (numpy), no BentoML: the bento's service, the CLI and tests call the same class. A known user
with features is ranked by the model (``Scorer.rank``: the same function the evaluation and the promotion gate
rank with), leaving out the items the caller excludes (by default the user's seen, i.e. recent, items). An
unknown user or a user without features is answered from ``popular_item_ids.npy`` with ``fallback=True`` and a
reason; ``similar_items`` ranks items by their embeddings, for item pages and users with no history.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recsys.artifact import ModelArtifact, load_artifact
from recsys.errors import ArtifactError, InvalidRequest
from recsys.scoring import Scorer, top_k_indices

log = logging.getLogger(__name__)

MIN_K = 1
MAX_K = 100
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_EXCLUDED = 10_000
MAX_SCORED = 1_000

REASON_NO_FEATURES = "no online features for this user"
REASON_UNKNOWN_USER = "user is not in the model's user vocabulary"
REASON_STORE_UNAVAILABLE = "feature store unavailable"


@dataclass(frozen=True)
class Recommendation:
    """Top-k items for one user; ``fallback`` says they came from popularity, ``fallback_reason`` why;
    ``degraded`` says the online store could not be read (the answer is a fallback).

    For a fallback, ``scores`` are reciprocal popularity ranks (1, 1/2, 1/3, ...), not model scores.
    """

    user_id: int
    item_ids: list[int]
    scores: list[float]
    fallback: bool
    model_version: str
    fallback_reason: str | None = field(default=None)
    degraded: bool = False


def validate_k(k: object) -> int:
    """Return ``k`` if it is an integer in ``[MIN_K, MAX_K]``, else raise :class:`InvalidRequest`."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise InvalidRequest(f"k must be an integer between {MIN_K} and {MAX_K}, got {k!r}.")
    if not MIN_K <= int(k) <= MAX_K:
        raise InvalidRequest(f"k must be between {MIN_K} and {MAX_K}, got {k}.")
    return int(k)


def validate_id(value: object, what: str = "user_id") -> int:
    """Return ``value`` if it is an integer that fits int64 (the id type of every table), else raise."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InvalidRequest(f"{what} must be an integer, got {value!r}.")
    if not INT64_MIN <= int(value) <= INT64_MAX:
        raise InvalidRequest(f"{what} {value} is outside int64 [{INT64_MIN}, {INT64_MAX}]: ids are 64-bit integers.")
    return int(value)


def validate_ids(values: Iterable[object], what: str, limit: int) -> list[int]:
    ids = [validate_id(v, what) for v in values]
    if len(ids) > limit:
        raise InvalidRequest(f"at most {limit} {what}s per request, got {len(ids)}.")
    return ids


def _walk_layers(layer: Any) -> list[Any]:
    """Every layer nested in ``layer`` (depth first), ``layer`` included."""
    found = [layer]
    for child in getattr(layer, "layers", []) or []:
        found.extend(_walk_layers(child))
    return found


def user_vocabulary(tower: Any) -> frozenset[int] | None:
    """The user ids the tower knows (its user ``IntegerLookup`` vocabulary), or None if it has no single one.

    An ensemble has one user lookup per member, all over the same training users: one vocabulary.
    """
    import keras

    lookups = [layer for layer in _walk_layers(tower) if isinstance(layer, keras.layers.IntegerLookup)]
    if len(lookups) > 1:
        lookups = [layer for layer in lookups if "user" in layer.name] or lookups
    vocabularies = {frozenset(int(v) for v in layer.get_vocabulary(include_special_tokens=False)) for layer in lookups}
    if len(vocabularies) != 1:
        log.warning("user tower has %d distinct user vocabularies: treating every user id as known", len(vocabularies))
        return None
    return vocabularies.pop()


class Recommender:
    """A loaded model artifact that answers top-k, similar-items and score requests."""

    def __init__(self, artifact_dir: Path, model_version: str | None = None, backend: str = "auto") -> None:
        """Load the artifact in ``artifact_dir``; ``model_version`` (e.g. the registry tag) labels answers."""
        artifact_dir = Path(artifact_dir)
        self.artifact: ModelArtifact = load_artifact(artifact_dir)
        self.manifest: dict[str, Any] = self.artifact.manifest
        self.feature_names: list[str] = self.artifact.user_feature_names
        self.model_version: str = model_version or str(self.manifest.get("model_version") or artifact_dir.name)
        self.item_ids = self.artifact.item_ids
        self.item_embeddings = self.artifact.item_embeddings
        self.popular_item_ids = self.artifact.popular_item_ids
        self.known_users = user_vocabulary(self.artifact.user_tower)
        self.scorer = Scorer(self.artifact, backend)
        if self.scorer.n_features != len(self.feature_names):
            raise ArtifactError(
                f"{artifact_dir}: the user tower takes {self.scorer.n_features} features, the manifest names "
                f"{len(self.feature_names)}; re-run training."
            )
        prior = float(self.manifest.get("training_options", {}).get("popularity_prior", 0.0) or 0.0)
        width = self.item_embeddings.shape[1] - (1 if prior else 0)  # the prior column is not a direction
        norms = np.linalg.norm(self.item_embeddings[:, :width], axis=1, keepdims=True)
        self._directions = (self.item_embeddings[:, :width] / np.maximum(norms, 1e-12)).astype(np.float32)

    @property
    def feature_service(self) -> str | None:
        """The Feast feature service the model was trained with (manifest ``feature_service``)."""
        return self.artifact.feature_service

    def is_known(self, user_id: int) -> bool:
        """Whether the tower has an embedding for ``user_id`` (True when the vocabulary is not inspectable)."""
        return self.known_users is None or int(user_id) in self.known_users

    def user_vector(
        self, user_id: int, user_features: Sequence[float], recent_items: Sequence[int] | None = None
    ) -> np.ndarray:
        """The tower's vector for one user, float32 ``[d]``."""
        row = self._feature_row(user_features)
        return self.scorer.user_vectors([int(user_id)], row[np.newaxis, :], [list(recent_items or [])])[0]

    def recommend(
        self,
        user_id: int,
        k: int = 10,
        user_features: Sequence[float] | None = None,
        recent_items: Sequence[int] | None = None,
        *,
        exclude_seen: bool = True,
        exclude_item_ids: Iterable[int] = (),
    ) -> Recommendation:
        """Top ``k`` items for ``user_id``: model scores if the user is known and has features, else popular.

        ``exclude_seen`` leaves out ``recent_items`` (the user's seen items from the online store);
        ``exclude_item_ids`` leaves out the caller's items too.
        """
        return self.recommend_many([(user_id, user_features, recent_items)], k, exclude_seen, [exclude_item_ids])[0]

    def recommend_many(
        self,
        users: Sequence[tuple[int, Sequence[float] | None, Sequence[int] | None]],
        k: int = 10,
        exclude_seen: bool = True,
        exclude_item_ids: Sequence[Iterable[int]] | None = None,
    ) -> list[Recommendation]:
        """``recommend`` for several ``(user_id, features, recent items)`` at once; same answers, one call."""
        k = validate_k(k)
        answers: list[Recommendation | None] = [None] * len(users)
        model_rows: list[int] = []
        excluded: list[set[int]] = []
        for i, (user_id, features, recent) in enumerate(users):
            user_id = validate_id(user_id)
            skip = set(exclude_item_ids[i]) if exclude_item_ids is not None and i < len(exclude_item_ids) else set()
            if exclude_seen and recent:
                skip.update(int(r) for r in recent)
            excluded.append(skip)
            if features is None:
                answers[i] = self.popular(user_id, k, REASON_NO_FEATURES, skip)
            elif not self.is_known(user_id):
                self._feature_row(features)
                answers[i] = self.popular(user_id, k, REASON_UNKNOWN_USER, skip)
            else:
                model_rows.append(i)
        if model_rows:
            ids = [int(users[i][0]) for i in model_rows]
            feats = np.stack([self._feature_row(users[i][1] or []) for i in model_rows])
            recent_lists = [list(users[i][2] or []) for i in model_rows]
            ranked = self.scorer.rank(ids, feats, k, recent_lists, [excluded[i] for i in model_rows])
            for i, r in zip(model_rows, ranked, strict=True):
                answers[i] = Recommendation(
                    user_id=int(users[i][0]),
                    item_ids=[int(x) for x in r.item_ids],
                    scores=[float(x) for x in r.scores],
                    fallback=False,
                    model_version=self.model_version,
                )
        return [a for a in answers if a is not None]

    def popular(
        self, user_id: int, k: int, reason: str, exclude: Iterable[int] = (), degraded: bool = False
    ) -> Recommendation:
        """The ``k`` most popular items (but ``exclude``), flagged as a fallback with ``reason``."""
        k = validate_k(k)
        ranked = self.popular_item_ids
        skip = np.fromiter((int(i) for i in exclude), np.int64)
        if skip.size:
            ranked = ranked[~np.isin(ranked, skip)]
        items = [int(i) for i in ranked[:k]]
        return Recommendation(
            user_id=int(user_id),
            item_ids=items,
            scores=[1.0 / (rank + 1) for rank in range(len(items))],
            fallback=True,
            model_version=self.model_version,
            fallback_reason=reason,
            degraded=degraded,
        )

    def similar_items(
        self, item_id: int, k: int = 10, exclude_item_ids: Iterable[int] = ()
    ) -> tuple[list[int], list[float]]:
        """The ``k`` items whose embeddings are closest (cosine) to ``item_id``'s, the item itself left out."""
        k = validate_k(k)
        col = self.catalog_columns([validate_id(item_id, "item_id")])[0]
        skip = self.scorer.columns([*exclude_item_ids, int(item_id)])
        scores = self._directions @ self._directions[col]
        top = top_k_indices(scores, k, skip)
        return [int(i) for i in self.item_ids[top]], [float(s) for s in scores[top]]

    def score(
        self,
        user_id: int,
        item_ids: Sequence[int],
        user_features: Sequence[float] | None,
        recent_items: Sequence[int] | None = None,
    ) -> list[float] | None:
        """The model's scores of ``item_ids`` for ``user_id`` (in the given order); None when the user is
        unknown or has no features (the caller keeps its own order)."""
        ids = validate_ids(item_ids, "item_id", MAX_SCORED)
        cols = self.catalog_columns(ids)
        user_id = validate_id(user_id)
        if user_features is None or not self.is_known(user_id):
            return None
        vector = self.user_vector(user_id, user_features, recent_items)
        scores = self.scorer.scores(vector[np.newaxis, :])[0]
        return [float(scores[c]) for c in cols]

    def catalog_columns(self, item_ids: Sequence[int]) -> list[int]:
        """The item matrix rows of ``item_ids``; InvalidRequest naming any id not in the catalog."""
        cols = self.scorer.columns(item_ids)
        if len(cols) != len(item_ids):
            known = set(self.item_ids[cols].tolist())
            unknown = [i for i in item_ids if i not in known]
            raise InvalidRequest(
                f"item ids {unknown[:10]} are not in the model's catalog ({len(self.item_ids)} items)."
            )
        return [int(c) for c in cols]

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
