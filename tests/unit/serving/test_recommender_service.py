"""The bento's service: the class called directly, and HTTP through ``to_asgi()``; a registered tiny model over
a real Feast SQLite online store. One app per module (module scope): the service instance loads the model.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from recsys.config import Settings, project_dir
from recsys.registry.serve import serving_env
from recsys.registry.store import bentoml_for, save_model
from recsys.serving.recommender import REASON_NO_FEATURES
from recsys.serving.testing import ExampleArtifact, materialize_example_users

# BentoML's own internals (_bentoml_sdk, _bentoml_impl) use APIs pydantic 2.11 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning:_bentoml_sdk.*", "ignore::DeprecationWarning:_bentoml_impl.*"
)

SERVICE_FILE = project_dir() / "bentos" / "recommender" / "service.py"
FEATURES = [40.0, 6.0, 0.14]


# Users 101..104 have online rows; 105 is known to the model but has none; 999 is unknown to both.
ONLINE = {
    101: ([40.0, 6.0, 0.14], [1003, 1005]),
    102: ([10.0, 1.0, 0.1], []),
    103: ([0.0, 0.0, 0.0], [1001]),
    104: (FEATURES, [1002, 1004, 1006]),
}


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, example_artifact: ExampleArtifact) -> tuple[Settings, str]:
    """Settings under a temporary home whose Feast SQLite store serves ONLINE, and the example artifact
    registered in its model store."""
    settings = Settings(home=tmp_path_factory.mktemp("service") / "home")
    materialize_example_users(settings, ONLINE)
    return settings, save_model(settings, example_artifact.directory, {"code_version": "test"})


def _service_env(registered: tuple[Settings, str]) -> dict[str, str]:
    settings, tag = registered
    return {**serving_env(settings), "RECSYS_MODEL_TAG": tag}


@pytest.fixture(scope="module")
def service_module(registered: tuple[Settings, str]) -> Iterator[ModuleType]:
    """bentos/recommender/service.py imported with the registered model's tag and RECSYS_* env."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in _service_env(registered).items():
            patch.setenv(key, value)
        name = f"recommender_service_{uuid.uuid4().hex}"
        spec = importlib.util.spec_from_file_location(name, SERVICE_FILE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        yield module
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def http(service_module: ModuleType, registered: tuple[Settings, str]) -> Iterator[Any]:
    """A Starlette test client over the service's ASGI app (the service instance is created on entry)."""
    from starlette.testclient import TestClient

    bentoml_for(registered[0])
    with TestClient(app=service_module.RecommenderService.to_asgi()) as client:
        yield client


@pytest.fixture
def service_env(registered: tuple[Settings, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's env for one test (the suite's autouse fixture clears RECSYS_* per test)."""
    for key, value in _service_env(registered).items():
        monkeypatch.setenv(key, value)
    bentoml_for(registered[0])


def test_service_declares_exactly_the_configured_model(
    service_module: ModuleType, registered: tuple[Settings, str]
) -> None:
    assert [str(m.tag) for m in service_module.RecommenderService.models] == [registered[1]]


def test_service_class_answers_known_user_from_the_model(
    service_module: ModuleType, service_env: None, registered: tuple[Settings, str], example_artifact: ExampleArtifact
) -> None:
    service = service_module.RecommenderService()
    features, seen = ONLINE[104]

    answer = service.runtime.recommend(104, k=4)

    expected = [i for i in example_artifact.expected_ranking(104, features) if i not in seen][:4]
    assert answer.fallback is False and answer.degraded is False
    assert answer.item_ids == expected
    assert answer.model_version == registered[1]
    assert service.runtime.feature_service == "recommender_v1_user"
    assert service.runtime.binding.problems == []
    assert service.runtime.binding.newest_materialization == "2024-01-08T00:00:00+00:00"


def test_http_recommend_leaves_out_seen_items_and_says_where_it_came_from(
    http: Any, registered: tuple[Settings, str], example_artifact: ExampleArtifact
) -> None:
    features, seen = ONLINE[101]
    ranking = example_artifact.expected_ranking(101, features)

    default = http.post("/v1/recommend", json={"user_id": 101, "k": 5}).json()
    with_seen = http.post("/v1/recommend", json={"user_id": 101, "k": 5, "exclude_seen": False}).json()
    excluded = http.post("/v1/recommend", json={"user_id": 101, "k": 5, "exclude_item_ids": ranking[:3]}).json()

    assert default["items"] == [i for i in ranking if i not in seen][:5]
    assert with_seen["items"] == ranking[:5]
    assert excluded["items"] == [i for i in ranking if i not in seen and i not in ranking[:3]][:5]
    for body in (default, with_seen, excluded):
        assert body["model_version"] == registered[1]
        assert body["feature_service"] == "recommender_v1_user"
        assert body["degraded"] is False and body["fallback"] is False


def test_http_users_without_online_rows_get_popular_items(http: Any, example_artifact: ExampleArtifact) -> None:
    popular = [int(i) for i in example_artifact.popular_item_ids]
    for user in (105, 999):
        body = http.post("/v1/recommend", json={"user_id": user, "k": 3, "exclude_item_ids": popular[:1]}).json()
        assert body["items"] == popular[1:4]
        assert body["fallback"] is True and body["fallback_reason"] == REASON_NO_FEATURES
        assert body["degraded"] is False


def test_http_batch_equals_single_requests(http: Any) -> None:
    requests = [{"user_id": u, "k": k} for u, k in [(101, 3), (102, 5), (104, 2), (999, 4), (101, 3)]]
    batch = http.post("/v1/recommend/batch", json={"requests": requests})
    singles = [http.post("/v1/recommend", json=r).json() for r in requests]

    assert batch.status_code == 200
    assert batch.json()["results"] == singles


def test_http_similar_items_and_score(http: Any, example_artifact: ExampleArtifact) -> None:
    similar = http.post("/v1/similar_items", json={"item_id": 1001, "k": 3}).json()
    vectors = example_artifact.item_embeddings / np.linalg.norm(example_artifact.item_embeddings, axis=1)[:, None]
    cosine = vectors @ vectors[0]
    cosine[0] = -np.inf
    assert similar["items"] == [int(example_artifact.item_ids[i]) for i in np.argsort(-cosine, kind="stable")[:3]]
    assert similar["model_version"] and similar["degraded"] is False

    features, _ = ONLINE[102]
    scored = http.post("/v1/score", json={"user_id": 102, "item_ids": [1007, 1001]}).json()
    vector = example_artifact.expected_user_vector(102, features)
    expected = example_artifact.item_embeddings[[6, 0]] @ vector
    np.testing.assert_allclose(scored["scores"], expected, atol=1e-5)
    assert scored["item_ids"] == [1007, 1001] and scored["degraded"] is False
    unknown_user = http.post("/v1/score", json={"user_id": 999, "item_ids": [1001]}).json()
    assert unknown_user["scores"] is None and unknown_user["reason"]


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v1/recommend", {"user_id": 101, "k": 0}, 422, "greater than or equal to 1"),
        ("/v1/recommend", {"user_id": 101, "k": 101}, 422, "less than or equal to 100"),
        ("/v1/recommend", {"user_id": 2**70}, 422, "less than or equal to 9223372036854775807"),
        ("/v1/recommend", {"user_id": -(2**63) - 1}, 422, "greater than or equal to -9223372036854775808"),
        ("/v1/recommend", {"user_id": "alice"}, 422, "valid integer"),
        ("/v1/recommend", {"user_id": 101, "exclude_item_ids": [2**64]}, 422, "less than or equal"),
        ("/v1/recommend", {"k": 3}, 422, "Field required"),
        ("/v1/similar_items", {"item_id": 5}, 404, "not in the model's catalog"),
        ("/v1/score", {"user_id": 101, "item_ids": [1001, 5]}, 404, "[5] are not in the model's catalog"),
        ("/v1/score", {"user_id": 101, "item_ids": []}, 422, "at least 1 item"),
    ],
)
def test_http_client_errors_are_4xx_with_a_true_message(
    http: Any, path: str, body: dict, status: int, message: str
) -> None:
    response = http.post(path, json=body)
    assert response.status_code == status, response.text
    assert message in response.text


def test_readyz_needs_the_model_and_an_answering_store(http: Any) -> None:
    assert http.get("/readyz").status_code == 200
    assert http.get("/livez").status_code == 200


def test_openapi_documents_every_api_and_the_served_fields(http: Any) -> None:
    spec = http.get("/v1/openapi.json").json()
    assert set(spec["paths"]) == {"/recommend", "/recommend/batch", "/similar_items", "/score"}
    schemas = spec["components"]["schemas"]
    for name in ("RecommendResponse", "SimilarResponse", "ScoreResponse"):
        assert {"model_version", "feature_service", "degraded"} <= set(schemas[name]["required"]), name
    assert schemas["RecommendBody"]["examples"] == [{"user_id": 101, "k": 10}]
    responses = spec["paths"]["/recommend"]["post"]["responses"]
    assert {"200", "401", "422"} <= set(responses)
