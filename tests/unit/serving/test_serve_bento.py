"""A real ``bentoml serve`` of a built bento, over HTTP."""

from __future__ import annotations

import pytest

from recsys.config import Settings
from recsys.registry.store import build_bento, save_model
from recsys.serving.client import ServingError, recommend_http, serve_bento
from recsys.serving.features import REASON_STORE_UNAVAILABLE
from recsys.serving.testing import ExampleArtifact


@pytest.mark.slow
def test_served_bento_answers_with_its_pinned_model(settings: Settings, example_artifact: ExampleArtifact) -> None:
    pinned = save_model(settings, example_artifact.directory, {"code_version": "pinned"})
    bento_tag = build_bento(settings, pinned)
    newer = save_model(settings, example_artifact.directory, {"code_version": "newer"})  # now "latest"

    with serve_bento(settings, bento_tag) as base_url:
        answer = recommend_http(base_url, user_id=101, k=3)
        with pytest.raises(ServingError) as bad_k:
            recommend_http(base_url, user_id=101, k=500)

    assert answer["model_version"] == pinned != newer
    assert answer["items"] == [int(i) for i in example_artifact.popular_item_ids[:3]]
    assert answer["fallback"] is True and answer["fallback_reason"] == REASON_STORE_UNAVAILABLE
    assert bad_k.value.status_code == 400 and "k must be between 1 and 100" in str(bad_k.value)


def test_serving_a_missing_bento_fails_with_the_server_log(settings: Settings) -> None:
    with pytest.raises(ServingError, match="exited") as failure, serve_bento(settings, "recommender:nosuchversion"):
        pass
    assert "nosuchversion" in str(failure.value)
