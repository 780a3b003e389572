"""Fixtures of the model-stage tests: a tiny random BERT checkpoint and an encoder loaded from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT in Hugging Face format (2 layers, hidden 32)."""
    from fixtures_bert import write_tiny_bert  # tests/ is on pythonpath (pyproject)

    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_encoder(tiny_bert_dir: Path) -> Any:
    """The item encoder over the tiny BERT (max_length 16)."""
    from recsys.model.encoder import load_encoder

    return load_encoder(str(tiny_bert_dir), max_length=16)
