"""``serve_bento`` over a bento that cannot be served: the failure carries the server log."""

from __future__ import annotations

import pytest

from recsys.config import Settings
from recsys.errors import ServingError
from recsys.serving.client import serve_bento


def test_serving_a_missing_bento_fails_with_the_server_log(settings: Settings) -> None:
    with pytest.raises(ServingError, match="exited") as failure, serve_bento(settings, "recommender:nosuchversion"):
        pass
    assert "nosuchversion" in str(failure.value)


def test_the_service_process_gets_the_serving_section(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from recsys.serving.client import serving_env

    settings = Settings(
        home=tmp_path,
        serving={"api_key": "s3cret", "degraded_ok": True, "max_staleness": timedelta(hours=5), "store_timeout_s": 0.2},
    )
    for key, value in serving_env(settings).items():
        monkeypatch.setenv(key, value)

    assert Settings().serving == settings.serving  # the secret included, so the service can check it
