"""Feature store stage: Feast apply, materialization and retrieval configured from Settings.

Importing this package is cheap: Feast is imported inside the functions.
"""

from recsys.features.store import (
    PROJECT,
    apply,
    definitions,
    feature_store,
    historical_features,
    materialize,
    offline_store_config,
    online_features,
    repo_config,
)

__all__ = [
    "PROJECT",
    "apply",
    "definitions",
    "feature_store",
    "historical_features",
    "materialize",
    "offline_store_config",
    "online_features",
    "repo_config",
]
