"""Property-based fuzzing of the HTTP API against its own OpenAPI spec (schemathesis, in process over ASGI).

The app is the real one (``create_app``) over a real runtime (``start_runtime``: the example artifact bound to
a Feast SQLite store materialized with ``materialize_example_users``). Every generated request, valid or not,
must answer without a server error, with a status code the spec documents, the documented content type and a
body that matches the documented schema of that status; schema-valid requests are accepted and invalid ones
rejected (4xx).

Schemathesis' own pytest integration (``@schema.parametrize`` over ``from_fixture``) does not run on pytest 9
(it sets the private ``Node._nodeid``), so each operation's cases come from ``APIOperation.as_strategy`` under a
plain ``@given``; ``test_the_spec_lists_exactly_the_fuzzed_operations`` keeps that list complete.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from recsys.config import Settings
from recsys.serving.recommender import INT64_MAX, INT64_MIN
from recsys.serving.testing import ExampleArtifact, materialize_example_users
from serving_fixtures import EXAMPLE_ROWS

# Feast's DuckDB offline store goes through ibis, which calls a deprecated duckdb method.
pytestmark = pytest.mark.filterwarnings("ignore:fetch_arrow_table:DeprecationWarning")

OPERATIONS = ["/recommend", "/recommend/batch", "/similar_items", "/score"]
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CHECKS = {
    GenerationMode.POSITIVE: [*CONFORMANCE, positive_data_acceptance],
    GenerationMode.NEGATIVE: [*CONFORMANCE, negative_data_rejection],
}
API_KEY = "fuzz-key"
FUZZ = settings(
    max_examples=50,
    deadline=None,
    database=None,  # no .hypothesis/ folder in the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory, example_artifact: ExampleArtifact) -> Iterator[Any]:
    from recsys.serving.startup import start_runtime

    s = Settings(home=tmp_path_factory.mktemp("fuzz"))
    materialize_example_users(s, EXAMPLE_ROWS)
    online = start_runtime(s, Path(example_artifact.directory), "example-v1")
    assert online.binding.problems == []
    yield online
    if online.rows is not None:
        online.rows.close()


def _schema(runtime: Any) -> Any:
    from recsys.serving.http import create_app

    return schemathesis.openapi.from_asgi("/openapi.json", create_app(lambda: runtime))


@pytest.fixture(scope="module")
def api_schema(runtime: Any) -> Any:
    return _schema(runtime)


@pytest.fixture(scope="module")
def keyed_schema(runtime: Any) -> Any:
    """The same app over a runtime that requires an API key (only the key differs)."""
    keyed = copy.copy(runtime)
    keyed.api_key = API_KEY
    return _schema(keyed)


def test_the_spec_lists_exactly_the_fuzzed_operations(api_schema: Any) -> None:
    found = sorted(f"{op.ok().method.upper()} {op.ok().path}" for op in api_schema.get_all_operations())
    assert found == sorted(f"POST {path}" for path in OPERATIONS)


def _checks(case: Any, mode: GenerationMode) -> list[Any]:
    """The checks that apply to this case."""
    checks = list(CHECKS[mode])
    if mode is GenerationMode.NEGATIVE and case.meta.components[ParameterLocation.BODY].mode.is_positive:
        # Only the X-API-Key header was negated: this service has no key, so it rightly answers (the spec
        # publishes "no key" as an alternative); the keyed test covers the key.
        checks.remove(negative_data_rejection)
    return checks


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("path", OPERATIONS)
def test_api_conforms_to_its_openapi_spec(api_schema: Any, path: str, mode: GenerationMode) -> None:
    @FUZZ
    @given(case=api_schema[path]["POST"].as_strategy(mode))
    def run(case: Any) -> None:
        case.call_and_validate(checks=_checks(case, mode))

    run()


@pytest.mark.parametrize("path", OPERATIONS)
def test_keyed_api_answers_401_without_the_key_and_conforms_with_it(keyed_schema: Any, path: str) -> None:
    @settings(FUZZ, max_examples=15)
    @given(case=keyed_schema[path]["POST"].as_strategy(GenerationMode.POSITIVE))
    def run(case: Any) -> None:
        for wrong in ({}, {"X-API-Key": "wrong"}):
            response = case.call(headers=wrong)
            assert response.status_code == 401, response.text
            case.validate_response(response, checks=CONFORMANCE)
        case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=CHECKS[GenerationMode.POSITIVE])

    run()


def test_published_id_bounds_are_exactly_int64(api_schema: Any) -> None:
    """FastAPI's OpenAPI model types minimum/maximum as float (2^63 - 1 would be published as 2^63)."""
    schemas = api_schema.raw_schema["components"]["schemas"]
    for model, field in [("RecommendBody", "user_id"), ("SimilarBody", "item_id"), ("ScoreBody", "user_id")]:
        bounds = schemas[model]["properties"][field]
        assert (bounds["minimum"], bounds["maximum"]) == (INT64_MIN, INT64_MAX), (model, field)
        assert type(bounds["maximum"]) is int and type(bounds["minimum"]) is int
    items = schemas["ScoreBody"]["properties"]["item_ids"]["items"]
    assert (items["minimum"], items["maximum"]) == (INT64_MIN, INT64_MAX)


def test_int64_bounds_are_accepted_and_one_past_them_rejected(runtime: Any) -> None:
    from starlette.testclient import TestClient

    from recsys.serving.http import create_app

    with TestClient(create_app(lambda: runtime)) as client:
        for user_id in (INT64_MIN, INT64_MAX):
            answer = client.post("/recommend", json={"user_id": user_id, "k": 3})
            assert answer.status_code == 200 and answer.json()["user_id"] == user_id, answer.text
        for user_id in (INT64_MIN - 1, INT64_MAX + 1):
            assert client.post("/recommend", json={"user_id": user_id}).status_code == 422


def test_an_undecodable_body_gets_a_documented_status(runtime: Any, api_schema: Any) -> None:
    from starlette.testclient import TestClient

    from recsys.serving.http import create_app

    with TestClient(create_app(lambda: runtime)) as client:
        response = client.post("/score", content=b"\x9e.", headers={"Content-Type": "application/json"})
    documented = api_schema.raw_schema["paths"]["/score"]["post"]["responses"]
    assert response.status_code in {400, 422}, response.text  # a client error, never a 5xx
    assert str(response.status_code) in documented, (response.status_code, sorted(documented))


@pytest.mark.parametrize(
    "path, body",
    [
        ("/recommend", {"user_id": True}),
        ("/recommend", {"user_id": 101, "k": True}),
        ("/recommend", {"user_id": 101, "exclude_item_ids": [False]}),
        ("/recommend", {"user_id": 101, "exclude_seen": 0}),
        ("/similar_items", {"item_id": True}),
        ("/score", {"user_id": 101, "item_ids": [True]}),
    ],
)
def test_json_booleans_are_not_integers(runtime: Any, path: str, body: dict[str, Any]) -> None:
    from starlette.testclient import TestClient

    from recsys.serving.http import create_app

    with TestClient(create_app(lambda: runtime)) as client:
        response = client.post(path, json=body)
    assert response.status_code == 422, response.text
