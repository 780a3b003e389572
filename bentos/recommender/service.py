"""BentoML service: recommendations from one pinned model version over the Feast online store.

The model version comes from the bento argument ``model_tag`` (``bentoml build --arg model_tag=name:version``,
recorded in the bento and re-applied when it is served); outside a bento it defaults to env
``RECSYS_MODEL_TAG``, else ``<RECSYS_MODEL_NAME or recommender>:latest``.

The API (``recsys.serving.http``: /v1/recommend, /v1/recommend/batch, /v1/similar_items, /v1/score, OpenAPI at
/v1/openapi.json) is a FastAPI app mounted in the service; BentoML runs the process, its workers and
/livez, /readyz (true once the model is loaded and the online store has answered). BentoML's per-request
Prometheus and access-log middlewares are off and its tracing skips /v1/: with them on, the framework alone
costs several times the request's own work here (docs/serving.md has the measurements).
"""

import os

import bentoml
from pydantic import BaseModel, Field

with bentoml.importing():
    from recsys.serving.http import create_app

API_PATH = "/v1"


def _default_model_tag() -> str:
    return os.environ.get("RECSYS_MODEL_TAG") or f"{os.environ.get('RECSYS_MODEL_NAME', 'recommender')}:latest"


class BentoArgs(BaseModel):
    """Build/serve-time arguments of this bento."""

    model_tag: str = Field(default_factory=_default_model_tag, description="name:version of the model to serve")


args = bentoml.use_arguments(BentoArgs)

api = create_app(
    lambda: bentoml.get_current_service().runtime, max_batch=int(os.environ.get("RECSYS_SERVING__MAX_BATCH", "64"))
)


@bentoml.asgi_app(api, path=API_PATH)
@bentoml.service(
    name="recommender",
    workers=int(os.environ.get("RECSYS_SERVING__WORKERS", "1")),
    traffic={"timeout": 30},
    metrics={"enabled": False},
    logging={"access": {"enabled": False}},
    tracing={"excluded_urls": [f"{API_PATH}/"]},
)
class RecommenderService:
    """Two-tower recommender over the Feast online store."""

    model = bentoml.models.BentoModel(args.model_tag)

    def __init__(self) -> None:
        from pathlib import Path

        from recsys.config import Settings
        from recsys.serving.startup import start_runtime

        self.runtime = start_runtime(Settings(), Path(self.model.path), str(self.model.tag))

    def __is_ready__(self) -> bool:
        return self.runtime.ready()
