"""The recommendation HTTP API (FastAPI): typed pydantic requests and responses with OpenAPI examples.

``create_app(get_runtime)`` builds the app over an :class:`~recsys.serving.runtime.OnlineRecommender`; the bento
mounts it (``@bentoml.asgi_app``), tests call it through ``to_asgi()`` or directly. Every response carries
``model_version``, ``feature_service`` and ``degraded``. Client errors are 4xx with a message that says what
is wrong: 401 (API key), 404 (an item not in the catalog), 422 (a field out of range, e.g. ``k`` or an id
outside int64).
"""

import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, Security
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool

from recsys.errors import InvalidRequest
from recsys.serving.recommender import INT64_MAX, INT64_MIN, MAX_EXCLUDED, MAX_K, MAX_SCORED, MIN_K
from recsys.serving.runtime import Batcher, OnlineRecommender, RecommendRequest, recommendation_dict

API_KEY_HEADER = "X-API-Key"
MAX_BATCH_USERS = 100


def _not_a_bool(value: Any) -> Any:
    """JSON true/false are not integers (pydantic's lax mode would read true as 1)."""
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


Id = Annotated[
    int,
    Field(ge=INT64_MIN, le=INT64_MAX, description="a 64-bit integer id", json_schema_extra={"format": "int64"}),
    BeforeValidator(_not_a_bool),
]
K = Annotated[
    int, Field(ge=MIN_K, le=MAX_K, description=f"how many items, {MIN_K}..{MAX_K}"), BeforeValidator(_not_a_bool)
]


class RecommendBody(BaseModel):
    """Top-k items for one user."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"user_id": 101, "k": 10}]})

    user_id: Id
    k: K = 10
    exclude_seen: StrictBool = Field(True, description="leave out the user's seen (recent) items from the online store")
    exclude_item_ids: list[Id] = Field(
        default_factory=list, max_length=MAX_EXCLUDED, description="item ids the answer must not contain"
    )


class Served(BaseModel):
    """What every answer says about where it came from."""

    model_version: str = Field(description="the registry tag of the model that answered")
    feature_service: str = Field(description="the Feast feature service the user features come from")
    degraded: bool = Field(description="true when the online store could not be read (a fallback answer)")


class RecommendResponse(Served):
    """Top-k items for one user, best first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "user_id": 101,
                    "items": [1003, 1001],
                    "scores": [0.82, 0.61],
                    "fallback": False,
                    "fallback_reason": None,
                    "degraded": False,
                    "model_version": "recommender:abc123",
                    "feature_service": "recommender_v1_user",
                }
            ]
        }
    )

    user_id: int
    items: list[int] = Field(description="item ids, best first")
    scores: list[float] = Field(description="model scores; reciprocal popularity ranks when fallback")
    fallback: bool = Field(description="true when the items are the most popular ones, not personalised")
    fallback_reason: str | None = None


class BatchBody(BaseModel):
    """Several users in one call."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"requests": [{"user_id": 101}, {"user_id": 102, "k": 5}]}]}
    )

    requests: list[RecommendBody] = Field(min_length=1, max_length=MAX_BATCH_USERS)


class BatchResponse(BaseModel):
    results: list[RecommendResponse]


class SimilarBody(BaseModel):
    """Items like one item (item pages; users with no history)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"item_id": 1001, "k": 10}]})

    item_id: Id
    k: K = 10


class SimilarResponse(Served):
    item_id: int
    items: list[int] = Field(description="item ids, most similar first (cosine of the item embeddings)")
    scores: list[float]


class ScoreBody(BaseModel):
    """Re-rank a caller's candidates for one user."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"user_id": 101, "item_ids": [1001, 1002, 1003]}]}
    )

    user_id: Id
    item_ids: list[Id] = Field(min_length=1, max_length=MAX_SCORED)


class ScoreResponse(Served):
    user_id: int
    item_ids: list[int]
    scores: list[float] | None = Field(description="one model score per item id; null when the user is unknown")
    reason: str | None = None


class ErrorResponse(BaseModel):
    detail: Any


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "the body is not parseable JSON (e.g. not UTF-8)"},
    401: {"model": ErrorResponse, "description": "missing or wrong API key"},
    422: {"model": ErrorResponse, "description": "a field is missing or out of range"},
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "item not in the catalog"}}


def create_app(get_runtime: Callable[[], OnlineRecommender], max_batch: int = 64) -> FastAPI:
    """The API over the runtime ``get_runtime()`` returns (resolved per request: the bento creates it late)."""
    app = FastAPI(
        title="recsys recommender",
        version="1",
        description="BERT two-tower recommendations from the Feast online store.",
        docs_url="/docs",
        openapi_url="/openapi.json",
    )
    batchers: dict[int, Batcher[RecommendRequest, Any]] = {}
    header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="set when the service has a key")

    async def runtime(key: Annotated[str | None, Security(header)]) -> OnlineRecommender:  # no thread hop
        current = get_runtime()
        if current.api_key and not (key and secrets.compare_digest(key.encode(), current.api_key.encode())):
            raise HTTPException(status_code=401, detail=f"missing or wrong {API_KEY_HEADER} header")
        return current

    Runtime = Annotated[OnlineRecommender, Depends(runtime)]

    def batcher(current: OnlineRecommender) -> Batcher[RecommendRequest, Any]:
        found = batchers.get(id(current))
        if found is None:
            found = batchers[id(current)] = Batcher(current.recommend_batch, max_batch)
        return found

    @app.exception_handler(InvalidRequest)
    async def invalid(_: Request, exc: InvalidRequest) -> JSONResponse:
        status = 404 if "not in the model's catalog" in str(exc) else 422
        return JSONResponse({"detail": str(exc)}, status_code=status)

    def _request(body: RecommendBody) -> RecommendRequest:
        return RecommendRequest(body.user_id, body.k, body.exclude_seen, tuple(body.exclude_item_ids)).check()

    @app.post("/recommend", response_model=RecommendResponse, responses=ERRORS)
    async def recommend(body: RecommendBody, current: Runtime) -> JSONResponse:
        """The k best items for a user, leaving out seen items; unknown users get popular items."""
        answer = await batcher(current).submit(_request(body))
        return JSONResponse(recommendation_dict(answer, current.feature_service))

    @app.post("/recommend/batch", response_model=BatchResponse, responses=ERRORS)
    async def recommend_batch(body: BatchBody, current: Runtime) -> JSONResponse:
        """``/recommend`` for several users, answered with one store read."""
        requests = [_request(r) for r in body.requests]
        import asyncio

        answers = await asyncio.get_running_loop().run_in_executor(None, current.recommend_batch, requests)
        return JSONResponse({"results": [recommendation_dict(a, current.feature_service) for a in answers]})

    @app.post("/similar_items", response_model=SimilarResponse, responses={**ERRORS, **NOT_FOUND})
    async def similar_items(body: SimilarBody, current: Runtime) -> JSONResponse:
        """Items closest to an item by their embeddings."""
        items, scores = current.similar_items(body.item_id, body.k)
        return JSONResponse(
            {
                "item_id": body.item_id,
                "items": items,
                "scores": scores,
                "model_version": current.model_version,
                "feature_service": current.feature_service,
                "degraded": False,
            }
        )

    @app.post("/score", response_model=ScoreResponse, responses={**ERRORS, **NOT_FOUND})
    async def score(body: ScoreBody, current: Runtime) -> JSONResponse:
        """The model's scores of the given items for a user, in the given order."""
        scored = current.score(body.user_id, body.item_ids)
        return JSONResponse(
            {
                "user_id": scored.user_id,
                "item_ids": scored.item_ids,
                "scores": scored.scores,
                "reason": scored.reason,
                "model_version": scored.model_version,
                "feature_service": current.feature_service,
                "degraded": scored.degraded,
            }
        )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = _optional_key(_exact_int64_bounds(schema))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _optional_key(schema: dict[str, Any]) -> dict[str, Any]:
    """The API key is required only when the service has one: publish "no key" as an alternative."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if operation.get("security"):
                operation["security"] = [{}, *operation["security"]]
    return schema


def _exact_int64_bounds(node: Any) -> Any:
    """FastAPI's OpenAPI model types minimum/maximum as floats (2^63 - 1 becomes 9.223372036854776e18 = 2^63):
    publish the int64 bounds exactly."""
    if isinstance(node, dict):
        if node.get("format") == "int64" and "minimum" in node:
            node["minimum"], node["maximum"] = INT64_MIN, INT64_MAX
        for value in node.values():
            _exact_int64_bounds(value)
    elif isinstance(node, list):
        for value in node:
            _exact_int64_bounds(value)
    return node
