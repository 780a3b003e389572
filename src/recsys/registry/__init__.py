"""Model registry (BentoML local model store), bento builds pinned to one model version, and the production
pointer (the bento ``recsys serve`` runs).

Importing this package is cheap: BentoML is imported inside the functions, after BENTOML_HOME is set.
"""

from recsys.registry.production import (
    BentoInfo,
    DeployRecord,
    deploy,
    deployments,
    list_bentos,
    production_bento,
    rollback,
)
from recsys.registry.store import (
    RegisteredModel,
    bento_models,
    bentoml_for,
    build_bento,
    get_model,
    latest_bento,
    list_models,
    resolve_bento,
    save_model,
)

__all__ = [
    "BentoInfo",
    "DeployRecord",
    "RegisteredModel",
    "bento_models",
    "bentoml_for",
    "build_bento",
    "deploy",
    "deployments",
    "get_model",
    "latest_bento",
    "list_bentos",
    "list_models",
    "production_bento",
    "resolve_bento",
    "rollback",
    "save_model",
]
