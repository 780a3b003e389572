"""Fixtures of the registry tests: a tiny real model artifact."""

from __future__ import annotations

import pytest

from recsys.serving.testing import ExampleArtifact, write_example_artifact


@pytest.fixture(scope="session")
def registry_artifact(tmp_path_factory: pytest.TempPathFactory) -> ExampleArtifact:
    """A tiny artifact (users 101..105, items 1001..1012) to register."""
    return write_example_artifact(tmp_path_factory.mktemp("registry_artifact") / "model")
