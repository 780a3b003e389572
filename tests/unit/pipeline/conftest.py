"""Fixtures of the stage tests: the tiny example artifact, and a run folder holding a training set and it."""

from __future__ import annotations

import shutil

import pytest
from run_fixtures import START, Run, example_training_set

from recsys.config import Settings
from recsys.features.training_set import TrainingData
from recsys.pipeline import run_dir
from recsys.serving.testing import ExampleArtifact, write_example_artifact


@pytest.fixture(scope="session")
def example_artifact(tmp_path_factory: pytest.TempPathFactory) -> ExampleArtifact:
    """The tiny example artifact (users 101..105, items 1001..1012)."""
    return write_example_artifact(tmp_path_factory.mktemp("pipeline_artifact") / "model")


@pytest.fixture
def run(settings: Settings, example_artifact: ExampleArtifact) -> Run:
    """The run folder of the interval: a saved training set over the example's users and items, and a copy of
    the example artifact as the trained model."""
    folder = run_dir(settings, START)
    data = example_training_set(example_artifact.user_ids, example_artifact.item_ids)
    data.save(folder)
    shutil.copytree(example_artifact.directory, folder / "artifact")
    return Run(settings, folder, TrainingData.load(folder), example_artifact)
