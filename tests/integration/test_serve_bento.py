"""``serve_bento`` over a bento that cannot be served: a real ``bentoml serve`` fails, and the failure carries
the server log."""

from __future__ import annotations

import pytest

from recsys.config import Settings
from recsys.errors import ServingError
from recsys.registry.serve import serve_bento

pytestmark = pytest.mark.slow  # starts a real `bentoml serve` process


def test_serving_a_missing_bento_fails_with_the_server_log(settings: Settings) -> None:
    with pytest.raises(ServingError, match="exited") as failure, serve_bento(settings, "recommender:nosuchversion"):
        pass
    assert "nosuchversion" in str(failure.value)
