"""The environment ``serve_bento`` and ``recsys serve`` give the service process recreates the settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from recsys.config import Settings
from recsys.registry.serve import serving_env


def test_the_service_process_gets_the_serving_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(
        home=tmp_path,
        serving={"api_key": "s3cret", "degraded_ok": True, "max_staleness": timedelta(hours=5), "store_timeout_s": 0.2},
    )
    for key, value in serving_env(settings).items():
        monkeypatch.setenv(key, value)

    assert Settings().serving == settings.serving  # the secret included, so the service can check it
