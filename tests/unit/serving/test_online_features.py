"""OnlineUserFeatures against the real recsys.features store code, when no Feast store exists yet."""

from __future__ import annotations

import pytest

from recsys.config import Settings
from recsys.errors import FeatureStoreError
from recsys.serving.features import OnlineUserFeatures, default_feature_service


def test_default_feature_service_is_the_user_side_service(settings: Settings) -> None:
    assert default_feature_service(settings) == "recommender_v1_user"
    assert OnlineUserFeatures(settings).feature_service == "recommender_v1_user"
    assert OnlineUserFeatures(settings, "recommender_v2_user").feature_service == "recommender_v2_user"


def test_unreadable_store_raises_feature_store_error(settings: Settings) -> None:
    # A fresh home has no applied Feast registry: a lookup must fail loudly, never return made-up features.
    source = OnlineUserFeatures(settings, retry_after_s=60.0)
    with pytest.raises(FeatureStoreError):
        source.user_features(101, ["user_ctr_28d"])
