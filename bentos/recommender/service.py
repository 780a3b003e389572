"""BentoML service: top-k item recommendations for a user from one pinned model version.

The model version comes from the bento argument ``model_tag`` (``bentoml build --arg model_tag=name:version``,
recorded in the bento and re-applied when it is served); outside a bento it defaults to env
``RECSYS_MODEL_TAG``, else ``<RECSYS_MODEL_NAME or recommender>:latest``. User features are read online from
Feast as configured by the ``RECSYS_*`` settings; when Feast cannot be read the service still answers, from
popularity, with ``fallback: true`` and a ``fallback_reason``, and logs a warning.
"""

import logging
import os
from pathlib import Path

import bentoml
from bentoml.exceptions import InvalidArgument
from pydantic import BaseModel, Field

with bentoml.importing():
    from recsys.config import Settings
    from recsys.serving.features import OnlineUserFeatures, recommend_online
    from recsys.serving.recommender import InvalidRequest, Recommender

log = logging.getLogger("bentoml.recsys")

EXAMPLE_INPUT = {"user_id": 101, "k": 5}


def _default_model_tag() -> str:
    return os.environ.get("RECSYS_MODEL_TAG") or f"{os.environ.get('RECSYS_MODEL_NAME', 'recommender')}:latest"


class BentoArgs(BaseModel):
    """Build/serve-time arguments of this bento."""

    model_tag: str = Field(default_factory=_default_model_tag, description="name:version of the model to serve")


args = bentoml.use_arguments(BentoArgs)


class RecommendResponse(BaseModel):
    """Top-k items for one user, best first."""

    user_id: int
    items: list[int] = Field(description="item ids, best first")
    scores: list[float] = Field(description="dot-product scores; reciprocal popularity ranks when fallback")
    fallback: bool = Field(description="true when the items are the most popular ones, not personalised")
    fallback_reason: str | None = None
    model_version: str = Field(description="the registry tag of the model that answered")


@bentoml.service(name="recommender", traffic={"timeout": 30})
class RecommenderService:
    """Two-tower recommender over the Feast online store."""

    model = bentoml.models.BentoModel(args.model_tag)

    def __init__(self) -> None:
        settings = Settings()
        self.recommender = Recommender(Path(self.model.path), model_version=str(self.model.tag))
        self.features = OnlineUserFeatures(settings, feature_service=self.recommender.feature_service)
        self.features.warm_up()
        log.info("serving %s with feature service %s", self.model.tag, self.features.feature_service)

    @bentoml.api
    def recommend(self, user_id: int, k: int = 10) -> RecommendResponse:
        """The k (1..100) best items for ``user_id``; unknown users get popular items with fallback=true."""
        try:
            result = recommend_online(self.recommender, self.features, user_id, k)
        except InvalidRequest as exc:
            raise InvalidArgument(str(exc)) from exc
        if result.fallback:
            log.info("user %s answered by popularity: %s", user_id, result.fallback_reason)
        return RecommendResponse(
            user_id=result.user_id,
            items=result.item_ids,
            scores=result.scores,
            fallback=result.fallback,
            fallback_reason=result.fallback_reason,
            model_version=result.model_version,
        )
