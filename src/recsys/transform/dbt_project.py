"""Where the dbt project and its parsed manifest live, and whether that manifest is current; imports no dbt.

The Airflow DAG renders its dbt task group from ``manifest.json`` (``dbt parse``) instead of running dbt while
the DAG file is parsed. :func:`recsys.transform.dbt.parse_manifest` writes the manifest under
``{home}/dbt/manifest/`` together with the fingerprint of the project it was parsed from; :func:`current_manifest`
(cheap: a hash of the project's few small files) returns it, or says to re-parse when it is missing or was parsed
from other files.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from recsys.config import Settings, project_dir
from recsys.errors import TransformError

PROFILE = "recsys"  # dbt_project.yml's `profile:`, the top-level key of dbt/profiles.yml
MANIFEST = "manifest.json"
FINGERPRINT = "project.sha256"
PARSE_COMMAND = "recsys dbt parse"
_SKIPPED_DIRS = frozenset({"target", "logs", "dbt_packages"})
_SOURCE_SUFFIXES = frozenset({".sql", ".yml", ".yaml", ".csv", ".md"})


def dbt_project_dir() -> Path:
    """The repository's dbt project (holds ``dbt_project.yml`` and ``profiles.yml``)."""
    return project_dir() / "dbt"


def manifest_dir(settings: Settings) -> Path:
    """Folder of the parsed manifest and its fingerprint: ``{home}/dbt/manifest``."""
    return settings.home / "dbt" / "manifest"


def project_files(project: Path) -> list[Path]:
    """The files a parse reads (models, tests, macros, YAML), sorted; build outputs and packages left out."""
    return sorted(
        p
        for p in project.rglob("*")
        if p.suffix in _SOURCE_SUFFIXES and p.is_file() and not _SKIPPED_DIRS & set(p.relative_to(project).parts)
    )


def project_fingerprint(project: Path | None = None) -> str:
    """SHA-256 of the dbt version and every project file's relative path and content."""
    project = project or dbt_project_dir()
    digest = hashlib.sha256(f"dbt-core {_dbt_version()}\n".encode())
    for path in project_files(project):
        digest.update(f"{path.relative_to(project).as_posix()}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _dbt_version() -> str:
    try:
        return version("dbt-core")
    except PackageNotFoundError:
        return "missing"


def manifest_problem(settings: Settings) -> str | None:
    """Why the parsed manifest cannot be used (missing, or parsed from other project files), or None."""
    folder = manifest_dir(settings)
    manifest, stamp = folder / MANIFEST, folder / FINGERPRINT
    if not manifest.is_file() or not stamp.is_file():
        return f"No parsed dbt manifest at {manifest}: the Airflow dbt task group is rendered from it."
    if stamp.read_text().strip() != project_fingerprint():
        return (
            f"The dbt manifest {manifest} was parsed from other project files than those in {dbt_project_dir()} "
            "(a model, test or macro changed since, or dbt was upgraded)."
        )
    return None


def current_manifest(settings: Settings) -> Path:
    """The parsed manifest of the project as it is now; a :class:`TransformError` saying what to run otherwise."""
    if problem := manifest_problem(settings):
        raise TransformError(f"{problem} Run `{PARSE_COMMAND}` (with the same RECSYS_HOME) to parse it.")
    return manifest_dir(settings) / MANIFEST


def manifest_models(manifest: Path) -> list[str]:
    """Names of the project's models in a parsed manifest."""
    nodes = json.loads(manifest.read_text())["nodes"]
    return sorted(n["name"] for n in nodes.values() if n["resource_type"] == "model")
