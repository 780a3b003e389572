"""The model registry (BentoML's local model store) and bento builds pinned to one model version.

BentoML home: BentoML resolves ``BENTOML_HOME`` once per process into cached stores. :func:`bentoml_for` sets
``BENTOML_HOME`` from ``settings.bentoml_home`` *before* BentoML first touches its stores and imports bentoml
lazily, so library callers never see ``~/bentoml``. A process should use one home; if it does switch
settings (a test suite does), :func:`bentoml_for` re-points BentoML's cached stores at the new home, as BentoML's
own pytest plugin does. Subprocesses (``bentoml build``, ``bentoml serve``) always get the home via env.

Bento builds run ``bentoml build`` in a subprocess (a clean import of the service module each time) from a
staged build context: ``bentos/recommender`` plus a copy of the ``recsys`` modules its service imports
(:mod:`recsys.registry.build_context`), so the bento is self-contained and carries only the serving runtime.
The model version is pinned with a bento template argument (``--arg model_tag=name:version``), which BentoML
records in ``bento.yaml`` and re-applies whenever the bento is served; the build is then checked to list
exactly that one model.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from recsys.artifact import ARTIFACT_FILES, check_artifact_dir, read_manifest
from recsys.config import Settings
from recsys.errors import ArtifactError, ConfigError, RegistryError
from recsys.registry.build_context import stage_build_context
from recsys.registry.serve import bentoml_subprocess_env

log = logging.getLogger(__name__)

LABEL_KEYS = ("feature_service", "code_version", "dataset_fingerprint")
BUILD_TIMEOUT_S = 600

# A model's status in the store, shown by ``bentoml models get``, list_models, list_bentos and `recsys bento list`:
PROMOTION_LABEL = "promotion"  # candidate (registered), then promoted or refused by the gate (decision in metadata)
CANDIDATE, PROMOTED, REFUSED = "candidate", "promoted", "refused"
INFRA_LABEL = "infra_validation"  # passed or failed: the newest infra validation of one of the model's bentos
INFRA_METADATA = "infra_validations"  # model metadata: {bento tag: that bento's newest infra validation summary}
MODEL_INFO_FILE = "model.yaml"  # where BentoML keeps a stored model's labels and metadata


@dataclass(frozen=True)
class RegisteredModel:
    """One model version in the store."""

    tag: str
    name: str
    version: str
    path: Path
    metadata: dict[str, Any]
    labels: dict[str, str]
    created_at: datetime

    @property
    def promotion(self) -> str | None:
        """``candidate``, ``promoted`` or ``refused`` (None for a model registered before statuses existed)."""
        return self.labels.get(PROMOTION_LABEL)


def bentoml_for(settings: Settings) -> ModuleType:
    """The ``bentoml`` module, its stores bound to ``settings.bentoml_home`` (set before first use)."""
    home = store_home(settings)
    os.environ["BENTOML_HOME"] = str(home)
    import bentoml
    from bentoml._internal.configuration.containers import BentoMLContainer

    if Path(BentoMLContainer.bentoml_home.get()).resolve() != home:
        _rebind_home(BentoMLContainer, home)
    return bentoml


def store_home(settings: Settings) -> Path:
    if settings.bentoml_home is None:
        raise RegistryError("settings.bentoml_home is not set: set RECSYS_BENTOML_HOME or RECSYS_HOME.")
    return settings.bentoml_home.resolve()


def _rebind_home(container: Any, home: Path) -> None:
    """Point BentoML's cached home, store dirs and stores at ``home`` (they are per-process singletons)."""
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.models import ModelStore

    log.info("re-pointing BentoML from %s to %s", container.bentoml_home.get(), home)
    dirs = {"bentos": home / "bentos", "models": home / "models", "envs": home / "envs", "tmp": home / "tmp"}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    container.bentoml_home.set(str(home))
    container.bento_store_dir.set(str(dirs["bentos"]))
    container.model_store_dir.set(str(dirs["models"]))
    container.env_store_dir.set(str(dirs["envs"]))
    container.tmp_bento_store_dir.set(str(dirs["tmp"]))
    container.bento_store.set(BentoStore(str(dirs["bentos"])))
    container.model_store.set(ModelStore(str(dirs["models"])))
    container.tmp_bento_store.set(BentoStore(str(dirs["tmp"])))


def _full_tag(settings: Settings, tag: str) -> str:
    """``name:version`` from a bare version, ``latest`` or a full tag."""
    return tag if ":" in tag else f"{settings.model_name}:{tag}"


def _labels(metadata: dict[str, Any], extra: dict[str, str] | None) -> dict[str, str]:
    labels = {key: str(metadata[key]) for key in LABEL_KEYS if metadata.get(key) is not None}
    labels[PROMOTION_LABEL] = CANDIDATE
    labels.update(extra or {})
    return labels


def _copy_artifact(artifact_dir: Path, target: Path) -> None:
    for name in ARTIFACT_FILES:
        source = artifact_dir / name
        if source.is_dir():
            shutil.copytree(source, target / name)
        else:
            shutil.copy2(source, target / name)


def save_model(
    settings: Settings, artifact_dir: Path, metadata: dict[str, Any], labels: dict[str, str] | None = None
) -> str:
    """Register the artifact in ``artifact_dir`` as a new version of ``settings.model_name``; return its tag.

    The stored metadata is the artifact's ``manifest.json`` updated with ``metadata`` (values made JSON-safe);
    labels default to the manifest's feature service, code version and dataset fingerprint and the status
    ``promotion: candidate`` (the promotion gate changes it: :func:`set_model_status`), plus ``labels``.
    """
    artifact_dir = Path(artifact_dir)
    try:
        check_artifact_dir(artifact_dir)
        merged = json.loads(json.dumps({**read_manifest(artifact_dir), **metadata}, default=str))
    except ArtifactError as exc:
        raise RegistryError(f"cannot register {artifact_dir}: {exc}") from exc
    bentoml = bentoml_for(settings)
    try:
        with bentoml.models.create(name=settings.model_name, labels=_labels(merged, labels), metadata=merged) as model:
            _copy_artifact(artifact_dir, Path(model.path))
    except (ValueError, OSError, bentoml.exceptions.BentoMLException) as exc:
        raise RegistryError(f"saving {artifact_dir} to the model store {store_home(settings)} failed: {exc}") from exc
    log.info("registered %s from %s", model.tag, artifact_dir)
    return str(model.tag)


def _registered(model: Any) -> RegisteredModel:
    return RegisteredModel(
        tag=str(model.tag),
        name=model.tag.name,
        version=str(model.tag.version),
        path=Path(model.path),
        metadata=dict(model.info.metadata),
        labels=dict(model.info.labels),
        created_at=model.info.creation_time,
    )


def _stored(settings: Settings, kind: str, full: str, missing: str) -> Any:
    """``bentoml.models.get(full)`` (``kind`` "model") or ``bentoml.bentos.get(full)`` ("bento"); a
    RegistryError that says ``missing`` when it is not in the store."""
    bentoml = bentoml_for(settings)
    store = bentoml.models if kind == "model" else bentoml.bentos
    try:
        return store.get(full)
    except bentoml.exceptions.NotFound:
        raise RegistryError(missing) from None
    except bentoml.exceptions.BentoMLException as exc:
        raise RegistryError(f"reading {kind} {full} from {store_home(settings)} failed: {exc}") from exc


def get_model(settings: Settings, tag: str = "latest") -> RegisteredModel:
    """The registered model ``tag`` (a version, ``latest`` or ``name:version``); RegistryError if absent."""
    full = _full_tag(settings, tag)
    missing = (
        f"model {full} is not in the model store {store_home(settings)}: register one with save_model "
        "(the training DAG's register step), or list versions with list_models."
    )
    return _registered(_stored(settings, "model", full, missing))


def set_model_status(
    settings: Settings, tag: str, labels: dict[str, str], metadata: dict[str, Any] | None = None
) -> RegisteredModel:
    """Merge ``labels`` and ``metadata`` (top-level keys replaced; None entries left out, as BentoML refuses them)
    into the stored model ``tag``; return it.

    BentoML 1.4 sets a model's labels and metadata only when it is saved (``bentoml.models.create``) and has no
    call that changes them afterwards, so this rewrites the model's ``model.yaml`` (a temporary file, then
    ``os.replace``, under a lock), and reads the model back; if BentoML cannot read it, the old file is restored.
    Bentos already built keep their own copy of the model as it was.
    """
    import yaml

    model = get_model(settings, tag)
    info = model.path / MODEL_INFO_FILE
    with _status_lock(settings):
        before = info.read_text()
        raw = yaml.safe_load(before)
        if not isinstance(raw, dict):
            raise RegistryError(f"{info} is not a BentoML model info file; re-register the model.")
        raw["labels"] = {**(raw.get("labels") or {}), **{str(k): str(v) for k, v in labels.items()}}
        safe = _without_none(json.loads(json.dumps(metadata or {}, default=str)))
        raw["metadata"] = {**(raw.get("metadata") or {}), **safe}
        _replace(info, yaml.safe_dump(raw, sort_keys=False))
        try:
            updated = get_model(settings, model.tag)
        except Exception as exc:  # BentoML refused the file (cattrs/ValueError too): put the old one back
            _replace(info, before)
            raise RegistryError(f"BentoML cannot read {info} with {labels} and {safe}: {exc}; left unchanged.") from exc
    log.info("model %s: %s", model.tag, ", ".join(f"{k}={v}" for k, v in labels.items()))
    return updated


def _without_none(value: Any) -> Any:
    """``value`` without None entries (BentoML metadata takes no None; a missing key reads as None with .get)."""
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_none(v) for v in value if v is not None]
    return value


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextmanager
def _status_lock(settings: Settings) -> Iterator[None]:
    """An exclusive lock on model status updates (beside the store, so no model folder gains a file)."""
    from recsys.registry.locks import file_lock

    with file_lock(store_home(settings) / ".model-status.lock"):
        yield


def list_models(settings: Settings) -> list[RegisteredModel]:
    """Every version of ``settings.model_name`` in the store, newest first."""
    bentoml = bentoml_for(settings)
    try:
        models = [_registered(m) for m in bentoml.models.list(settings.model_name)]
    except bentoml.exceptions.NotFound:
        return []
    return sorted(models, key=lambda m: m.created_at, reverse=True)


def bento_models(settings: Settings, bento_tag: str) -> list[str]:
    """The model tags a built bento names (a correctly built recommender bento names exactly one)."""
    missing = f"bento {bento_tag} is not in {store_home(settings)}: build it with build_bento."
    return [str(model.tag) for model in _stored(settings, "bento", bento_tag, missing).info.all_models]


BINDING_LABELS = ("feature_service", "data_interval_start", "data_interval_end", "catalog_fingerprint")


def bento_labels(model: RegisteredModel) -> dict[str, str]:
    """What a bento records about its one model: the version, and what the service binds to at start."""
    labels = {"model_version": model.version}
    labels.update({key: str(model.metadata[key]) for key in BINDING_LABELS if model.metadata.get(key) is not None})
    return labels


def _run_build(settings: Settings, context: Path, model: RegisteredModel) -> str:
    model_tag = model.tag
    command = [
        sys.executable, "-m", "bentoml", "build", ".", "--bentofile", "bentofile.yaml", "--output", "tag",
        "--name", settings.bento_name, "--arg", f"model_tag={model_tag}",
    ]  # fmt: skip
    for key, value in bento_labels(model).items():
        command += ["--label", f"{key}={value}"]
    try:
        env = {**bentoml_subprocess_env(settings), "RECSYS_MODEL_TAG": model_tag}
    except ConfigError as exc:
        raise RegistryError(f"cannot run bentoml build: {exc}") from exc
    try:
        done = subprocess.run(
            command, cwd=context, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise RegistryError(f"bentoml build did not finish in {BUILD_TIMEOUT_S} s: {exc}") from exc
    tags = [line.split("__tag__:", 1)[1].strip() for line in done.stdout.splitlines() if "__tag__:" in line]
    if done.returncode != 0 or not tags:
        tail = "\n".join((done.stdout + "\n" + done.stderr).strip().splitlines()[-30:])
        raise RegistryError(f"bentoml build of {context} failed (exit {done.returncode}):\n{tail}")
    return tags[-1]


def build_bento(settings: Settings, model_tag: str) -> str:
    """Build the recommender bento into the store, pinned to exactly ``model_tag``; return the bento tag."""
    model = get_model(settings, model_tag)
    build_root = settings.home / "build"
    build_root.mkdir(parents=True, exist_ok=True)
    context = Path(tempfile.mkdtemp(prefix="bento-", dir=build_root))
    try:
        stage_build_context(settings, context)
        bento_tag = _run_build(settings, context, model)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    named = bento_models(settings, bento_tag)
    if named != [model.tag]:
        bentoml_for(settings).bentos.delete(bento_tag)
        raise RegistryError(f"bento {bento_tag} names models {named}, expected exactly [{model.tag}]; deleted it.")
    log.info("built bento %s pinned to %s", bento_tag, model.tag)
    return bento_tag


def latest_bento(settings: Settings) -> str:
    """Tag of the most recently built recommender bento."""
    bentoml = bentoml_for(settings)
    try:
        bentos = bentoml.bentos.list(settings.bento_name)
    except bentoml.exceptions.NotFound:
        bentos = []
    if not bentos:
        raise RegistryError(
            f"no {settings.bento_name} bento in {store_home(settings)}: run the daily DAG (recsys run) first."
        )
    return str(max(bentos, key=lambda b: b.info.creation_time).tag)


def resolve_bento(settings: Settings, bento_tag: str) -> str:
    """The full ``name:version`` of a bento given as a full tag, a bare version of ``settings.bento_name``, or
    ``latest``; RegistryError when it is not in the store."""
    full = bento_tag if ":" in bento_tag else f"{settings.bento_name}:{bento_tag}"
    missing = (
        f"bento {full} is not in {store_home(settings)}: build one with the training DAG (recsys run) or "
        "build_bento, and see the built ones with `recsys bento list`."
    )
    return str(_stored(settings, "bento", full, missing).tag)
