"""Model registry (BentoML local model store) and bento builds pinned to one model version.

Importing this package is cheap: BentoML is imported inside the functions, after BENTOML_HOME is set.
"""

from recsys.registry.store import (
    RegisteredModel,
    bento_models,
    bentoml_for,
    build_bento,
    get_model,
    latest_bento,
    list_models,
    save_model,
)

__all__ = [
    "RegisteredModel",
    "bento_models",
    "bentoml_for",
    "build_bento",
    "get_model",
    "latest_bento",
    "list_models",
    "save_model",
]
