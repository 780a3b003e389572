"""Export a trained model as a model artifact (files, manifest and loading: ``recsys.artifact``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.artifact import PAD_ITEM_ID, REQUIRED_METADATA, write_artifact
from recsys.errors import ArtifactError, TrainingError
from recsys.model.trained import TrainedModel

log = logging.getLogger(__name__)


def export_artifact(
    trained: TrainedModel, out_dir: Path, popular_item_ids: Sequence[int] | np.ndarray, metadata: Mapping[str, Any]
) -> Path:
    """Write ``trained`` as a model artifact into ``out_dir`` (``recsys.artifact.write_artifact``).

    ``metadata`` must hold the artifact contract's ``REQUIRED_METADATA``; the manifest adds the feature names,
    the loss curve, the recent-items input and the training options.
    """
    try:
        write_artifact(
            Path(out_dir),
            trained.user_tower,
            trained.item_ids,
            trained.item_embeddings,
            popular_item_ids,
            _manifest(trained, metadata),
        )
    except ArtifactError as exc:
        raise TrainingError(str(exc)) from exc
    log.info("exported model artifact to %s", out_dir)
    return Path(out_dir)


def _manifest(trained: TrainedModel, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The artifact manifest of ``trained``: ``metadata`` plus what the model itself records."""
    missing = [k for k in REQUIRED_METADATA if k not in metadata]
    if missing:
        raise TrainingError(f"artifact metadata lacks {missing}; the model artifact contract requires them.")
    return {
        **metadata,
        "user_feature_names": trained.user_feature_names,
        "item_feature_names": trained.item_feature_names,
        "training_loss": trained.history,
        # User tower input recent_item_ids: int64 [B, history_length], newest first, padded with PAD_ITEM_ID.
        "history_length": trained.history_length,
        "recent_item_pad": PAD_ITEM_ID,
        "training_options": trained.options,
    }
