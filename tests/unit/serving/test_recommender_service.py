"""The bento's service: the class called directly, and HTTP through ``to_asgi()``; a registered tiny model.

BentoML registers its Prometheus metrics once per ASGI app and process, so this module builds one app and
shares it (module scope); a second ``to_asgi()`` app in the same process fails with "Duplicated timeseries".
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from recsys.config import Settings, project_dir
from recsys.registry.store import bentoml_for, save_model
from recsys.serving.client import serving_env
from recsys.serving.features import REASON_STORE_UNAVAILABLE
from recsys.serving.testing import ExampleArtifact

# BentoML's own internals (_bentoml_sdk, _bentoml_impl) use APIs pydantic 2.11 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning:_bentoml_sdk.*", "ignore::DeprecationWarning:_bentoml_impl.*"
)

SERVICE_FILE = project_dir() / "bentos" / "recommender" / "service.py"
FEATURES = [40.0, 6.0, 0.14]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory, example_artifact: ExampleArtifact) -> tuple[Settings, str]:
    """Settings under a temporary home, and the example artifact registered in its model store."""
    settings = Settings(home=tmp_path_factory.mktemp("service") / "home")
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
    service_module: ModuleType,
    service_env: None,
    registered: tuple[Settings, str],
    example_artifact: ExampleArtifact,
    dict_features: type,
) -> None:
    service = service_module.RecommenderService()
    names = example_artifact.manifest["user_feature_names"]
    service.features = dict_features({104: dict(zip(names, FEATURES, strict=True))})

    response = service.recommend(user_id=104, k=4)

    assert response.fallback is False
    assert response.items == example_artifact.expected_ranking(104, FEATURES)[:4]
    assert response.model_version == registered[1]


def test_http_recommend_without_feature_store_falls_back_to_popular(
    http: Any,
    service_module: ModuleType,
    registered: tuple[Settings, str],
    example_artifact: ExampleArtifact,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The test home has no Feast registry: the real OnlineUserFeatures cannot open the store.
    response = http.post("/recommend", json=service_module.EXAMPLE_INPUT)

    assert response.status_code == 200, response.text
    body = response.json()
    k = service_module.EXAMPLE_INPUT["k"]
    assert body["user_id"] == service_module.EXAMPLE_INPUT["user_id"]
    assert body["items"] == [int(i) for i in example_artifact.popular_item_ids[:k]]
    assert body["fallback"] is True and body["fallback_reason"] == REASON_STORE_UNAVAILABLE
    assert body["model_version"] == registered[1]
    assert "from popularity" in caplog.text


def test_http_default_k_and_bad_input(http: Any) -> None:
    default = http.post("/recommend", json={"user_id": 101})
    too_many = http.post("/recommend", json={"user_id": 101, "k": 101})
    zero = http.post("/recommend", json={"user_id": 101, "k": 0})
    not_an_int = http.post("/recommend", json={"user_id": "alice", "k": 3})

    assert default.status_code == 200 and len(default.json()["items"]) == 10
    assert too_many.status_code == 400 and "k must be between 1 and 100" in too_many.text
    assert zero.status_code == 400 and "got 0" in zero.text
    assert not_an_int.status_code == 400
    assert http.get("/readyz").status_code == 200


def test_openapi_documents_the_response_fields(service_module: ModuleType) -> None:
    spec = service_module.RecommenderService.openapi_spec.asdict()
    responses = {str(int(code)): body for code, body in spec["paths"]["/recommend"]["post"]["responses"].items()}
    schema = responses["200"]["content"]["application/json"]["schema"]
    assert {"user_id", "items", "scores", "fallback", "model_version"} <= set(schema["required"])
    assert "400" in responses
