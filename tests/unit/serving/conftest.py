"""Fixtures of the serving tests: a tiny real model artifact with known weights, and a dict feature source."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.serving.recommender import Recommender
from recsys.serving.testing import ExampleArtifact, write_example_artifact


@pytest.fixture(scope="session")
def example_artifact(tmp_path_factory: pytest.TempPathFactory) -> ExampleArtifact:
    """A tiny artifact: users 101..105, items 1001..1012, 3 user features, d = 8."""
    return write_example_artifact(tmp_path_factory.mktemp("artifact") / "model", model_version="example-v1")


@pytest.fixture(scope="session")
def recommender(example_artifact: ExampleArtifact) -> Recommender:
    """The example artifact, loaded."""
    return Recommender(example_artifact.directory)


@pytest.fixture
def artifact_copy(example_artifact: ExampleArtifact, tmp_path: Path) -> Path:
    """A private copy of the example artifact that a test may damage."""
    import shutil

    return Path(shutil.copytree(example_artifact.directory, tmp_path / "artifact"))
