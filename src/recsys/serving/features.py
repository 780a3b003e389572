"""Online user features for serving, read from the Feast online store through ``recsys.features``.

A feature source answers ``user_features(user_id, names)`` with the values in ``names`` order, ``None`` when the
store holds no (complete) row for that user, and raises :class:`~recsys.errors.FeatureStoreError` when the
store itself cannot be read. :func:`recommend_online` turns either case into a popularity fallback that says why,
so a service keeps answering while Feast is down.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from recsys.errors import FeatureStoreError

if TYPE_CHECKING:
    from recsys.config import Settings
    from recsys.serving.recommender import Recommendation, Recommender

log = logging.getLogger(__name__)

REASON_STORE_UNAVAILABLE = "feature store unavailable"


class UserFeatureSource(Protocol):
    """Anything that returns a user's numeric features in a given order."""

    def user_features(self, user_id: int, names: Sequence[str]) -> list[float] | None:
        """Values of ``names`` for ``user_id``; None if the user has no complete row."""
        ...


def default_feature_service(settings: Settings) -> str:
    """The user-side feature service of the configured model version, e.g. ``recommender_v1_user``."""
    return f"{settings.feature_service_name}_user"


class OnlineUserFeatures:
    """User features from the Feast online store named by ``settings``.

    The store is opened on first use (or by :meth:`warm_up`); after a failed open, lookups fail fast for
    ``retry_after_s`` seconds before the next attempt, so a service stays quick while Feast is down.
    """

    def __init__(self, settings: Settings, feature_service: str | None = None, retry_after_s: float = 30.0) -> None:
        """``feature_service`` defaults to the settings' user-side service (use the model's manifest value)."""
        self.settings = settings
        self.feature_service = feature_service or default_feature_service(settings)
        self.retry_after_s = retry_after_s
        self._store: Any = None
        self._down_until = 0.0
        self._last_error = ""

    def _open(self) -> Any:
        if self._store is not None:
            return self._store
        if time.monotonic() < self._down_until:
            raise FeatureStoreError(f"{self._last_error} (retrying in at most {self.retry_after_s:.0f} s)")
        try:
            from recsys.features.store import feature_store

            self._store = feature_store(self.settings)
        except Exception as exc:  # ImportError, Feast config or registry errors: all mean "unreadable"
            self._down_until = time.monotonic() + self.retry_after_s
            self._last_error = (
                f"cannot open the Feast store (repo {self.settings.feast_repo}, registry "
                f"{self.settings.feast_registry}): {exc}. Run feature apply/materialize or check RECSYS_* settings."
            )
            raise FeatureStoreError(self._last_error) from exc
        return self._store

    def warm_up(self) -> bool:
        """Open the store now (imports Feast); log and return False if it cannot be opened."""
        try:
            self._open()
        except FeatureStoreError as exc:
            log.warning("online features unavailable at start-up, serving popularity until they are: %s", exc)
            return False
        return True

    def user_features(self, user_id: int, names: Sequence[str]) -> list[float] | None:
        """Read ``names`` for ``user_id`` from the online store; None when the user has no complete row."""
        store = self._open()
        try:
            from recsys.features.store import online_features

            columns = online_features(store, self.feature_service, [{"user_id": int(user_id)}])
        except Exception as exc:  # online store down (Redis refused, SQLite file missing, ...)
            raise FeatureStoreError(
                f"online lookup of {self.feature_service} for user {user_id} failed: {exc}. "
                "Check the online store is reachable and materialized."
            ) from exc
        self._last = (int(user_id), columns)
        return select_features(columns, names)

    def recent_items(self, user_id: int) -> list[int]:
        """The user's recent positive items (newest first) from the lookup :meth:`user_features` just made."""
        last = getattr(self, "_last", None)
        if last is None or last[0] != int(user_id):
            return []
        column = next((col for key, col in last[1].items() if key.split("__")[-1] == "recent_item_ids"), None)
        values = column[0] if column else None
        return [int(i) for i in values] if values else []


def select_features(columns: dict[str, list[Any]], names: Sequence[str]) -> list[float] | None:
    """First row of an online response, in ``names`` order; None if any value is missing or not a number.

    A name matches a column of the same name or a full ``view__name`` column.
    """
    values: list[float] = []
    for name in names:
        column = columns.get(name)
        if column is None:
            column = next((col for key, col in columns.items() if key.split("__")[-1] == name), None)
        if column is None:
            raise FeatureStoreError(
                f"the online response has no feature {name!r} (columns: {sorted(columns)}): the model's "
                "user_feature_names and the feature service disagree; retrain or fix the feature service."
            )
        value = column[0] if column else None
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(float(value)):
            return None
        values.append(float(value))
    return values


def recommend_online(recommender: Recommender, source: UserFeatureSource, user_id: int, k: int = 10) -> Recommendation:
    """Look up the user's features, then recommend; an unreadable store gives a logged popularity fallback."""
    from recsys.serving.recommender import validate_k

    validate_k(k)
    try:
        features = source.user_features(user_id, recommender.feature_names)
    except FeatureStoreError as exc:
        log.warning("serving user %s from popularity: %s", user_id, exc)
        return recommender.popular(user_id, k, REASON_STORE_UNAVAILABLE)
    recent = source.recent_items(user_id) if hasattr(source, "recent_items") else []
    return recommender.recommend(user_id, k, features, recent)
