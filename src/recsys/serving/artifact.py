"""The model artifact on disk, as docs/contracts.md ("Model artifact") defines it: read and check only.

The training code (``recsys.model``) writes artifacts; the registry and the serving code read them through the
helpers here, so both agree on which files make an artifact and what a manifest must hold.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recsys.errors import RecsysError

USER_TOWER = "user_tower.keras"
ITEM_IDS = "item_ids.npy"
ITEM_EMBEDDINGS = "item_embeddings.npy"
POPULAR_ITEM_IDS = "popular_item_ids.npy"
MANIFEST = "manifest.json"
ARTIFACT_FILES: tuple[str, ...] = (USER_TOWER, ITEM_IDS, ITEM_EMBEDDINGS, POPULAR_ITEM_IDS, MANIFEST)

# Manifest keys the serving side cannot work without.
REQUIRED_MANIFEST_KEYS: tuple[str, ...] = ("user_feature_names",)


class ArtifactError(RecsysError, ValueError):
    """A model artifact directory is missing files or holds an unusable manifest."""


def check_artifact_dir(directory: Path) -> None:
    """Raise :class:`ArtifactError` unless ``directory`` holds every file of a model artifact."""
    if not directory.is_dir():
        raise ArtifactError(f"Model artifact {directory} is not a directory: pass the folder the training step wrote.")
    missing = [name for name in ARTIFACT_FILES if not (directory / name).exists()]
    if missing:
        raise ArtifactError(
            f"Model artifact {directory} lacks {', '.join(missing)}: re-run training, which writes "
            f"{', '.join(ARTIFACT_FILES)}."
        )


def read_manifest(directory: Path) -> dict[str, Any]:
    """The artifact's ``manifest.json`` as a dict, checked for the keys serving needs."""
    path = directory / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist: the artifact is incomplete; re-run training.") from None
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}): re-run training to rewrite it.") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{path} must hold a JSON object, found {type(manifest).__name__}.")
    missing = [key for key in REQUIRED_MANIFEST_KEYS if key not in manifest]
    if missing:
        raise ArtifactError(f"{path} lacks {', '.join(missing)}: the training step must record them.")
    names = manifest["user_feature_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ArtifactError(f"{path}: user_feature_names must be a list of feature names (strings).")
    return manifest
