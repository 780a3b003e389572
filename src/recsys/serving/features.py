"""Names shared by the online feature readers (``recsys.serving.online``) and the service."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from recsys.errors import FeatureStoreError

if TYPE_CHECKING:
    from recsys.config import Settings


def default_feature_service(settings: Settings) -> str:
    """The user-side feature service of the configured model version, e.g. ``recommender_v1_user``."""
    return f"{settings.feature_service_name}_user"


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
