"""The production pointer: which bento ``recsys serve`` runs. Deploy and rollback move it.

The pointer is ``<settings.bentoml_home>/production.json``, stored with the registry it points into::

    {"current": {"bento": "recommender:v3", "model": "recommender:m3", "deployed_at": "...", "reason": "..."},
     "history": [<every earlier current entry, oldest first, newest last>]}

It is replaced atomically (a temporary file in the same folder, then ``os.replace``), so a reader sees the old
or the new pointer, never half of one; writers take an exclusive ``fcntl.flock`` on a lock file beside it, so
two deploys (threads or processes) never interleave their read-modify-write.

History semantics: ``history`` is the audit trail of every entry that was ever current, in order. A deploy or
a rollback appends the entry it replaces. :func:`rollback` makes the newest history entry's bento current again
(a new entry, reason ``rollback from <bento>``), so a second rollback returns to where the first started: it
flips between the last two productions, like ``cd -``. To go further back, deploy an older bento by tag
(``recsys bento list`` shows them). Deploying the bento that is already current is a no-op.

This pointer names the *served bento*. The promotion gate keeps its own pointer to the production *model*
(``recsys.registry.gate.production_tag``), the baseline the next candidate must beat; a rollback here does not
move it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.errors import RegistryError
from recsys.registry import store
from recsys.registry.locks import file_lock

if TYPE_CHECKING:
    from recsys.config import Settings

log = logging.getLogger(__name__)

POINTER_FILE = "production.json"
LOCK_FILE = ".production.json.lock"
NEXT_STEP = (
    "run the training DAG (recsys run --day YYYY-MM-DD), whose promotion gate deploys the bento it builds, "
    "or deploy a built one with `recsys bento deploy TAG` (tags: `recsys bento list`)"
)


@dataclass(frozen=True)
class DeployRecord:
    """One production entry: the bento, the one model it names, when and why it became production."""

    bento: str
    model: str
    deployed_at: str
    reason: str


@dataclass(frozen=True)
class _Pointer:
    current: DeployRecord | None
    history: list[DeployRecord]


def pointer_path(settings: Settings) -> Path:
    """``<settings.bentoml_home>/production.json``."""
    return store.store_home(settings) / POINTER_FILE


def _record(raw: Any, path: Path) -> DeployRecord:
    try:
        return DeployRecord(str(raw["bento"]), str(raw["model"]), str(raw["deployed_at"]), str(raw["reason"]))
    except (KeyError, TypeError) as exc:
        raise RegistryError(f"{path} holds a malformed entry {raw!r} ({exc}); fix or delete the file.") from exc


def _read(settings: Settings) -> _Pointer:
    path = pointer_path(settings)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return _Pointer(None, [])
    except (OSError, ValueError) as exc:
        raise RegistryError(f"cannot read the production pointer {path}: {exc}; fix or delete the file.") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("history", []), list):
        raise RegistryError(f"{path} is not a production pointer; fix or delete the file.")
    current = _record(raw["current"], path) if raw.get("current") is not None else None
    return _Pointer(current, [_record(entry, path) for entry in raw.get("history", [])])


def _write(settings: Settings, pointer: _Pointer) -> None:
    path = pointer_path(settings)
    body = {
        "current": asdict(pointer.current) if pointer.current else None,
        "history": [asdict(entry) for entry in pointer.history],
    }
    fd, tmp = tempfile.mkstemp(prefix=".production.json.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(body, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def _locked(settings: Settings) -> Iterator[None]:
    """An exclusive lock on the pointer (per open file, so it also serializes threads of one process)."""
    with file_lock(pointer_path(settings).with_name(LOCK_FILE)):
        yield


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _check_bento(settings: Settings, bento_tag: str) -> tuple[str, str]:
    """``(full bento tag, its one model tag)``; RegistryError saying what to run when it cannot be deployed."""
    tag = store.resolve_bento(settings, bento_tag)
    if tag.split(":", 1)[0] != settings.bento_name:
        raise RegistryError(f"bento {tag} is not a {settings.bento_name} bento; deploy one of `recsys bento list`.")
    models = store.bento_models(settings, tag)
    if len(models) != 1:
        raise RegistryError(
            f"bento {tag} names {len(models)} models {models}, a deployable bento names exactly one: rebuild it "
            "with build_bento(settings, MODEL_TAG) (the training DAG's build_bento step) and deploy that."
        )
    return tag, models[0]


def production(settings: Settings) -> DeployRecord | None:
    """The current production entry, or None before the first deploy."""
    return _read(settings).current


def production_bento(settings: Settings) -> str | None:
    """The tag of the production bento, or None before the first deploy."""
    current = production(settings)
    return current.bento if current else None


def deployments(settings: Settings) -> list[DeployRecord]:
    """Every production entry, oldest first; the last one is current (empty before the first deploy)."""
    pointer = _read(settings)
    return [*pointer.history, *([pointer.current] if pointer.current else [])]


def deploy(settings: Settings, bento_tag: str, reason: str = "deploy") -> DeployRecord:
    """Make ``bento_tag`` (``name:version``, a bare version, or ``latest``) the production bento.

    The bento must be in the store and name exactly one model. Deploying the current bento again returns its
    entry unchanged (the history does not grow).
    """
    tag, model = _check_bento(settings, bento_tag)
    with _locked(settings):
        pointer = _read(settings)
        if pointer.current is not None and pointer.current.bento == tag:
            log.info("%s is already the production bento", tag)
            return pointer.current
        record = DeployRecord(tag, model, _now(), reason)
        _write(settings, _Pointer(record, [*pointer.history, *([pointer.current] if pointer.current else [])]))
        _follow(settings, record)
    log.info("deployed %s (model %s): %s", tag, model, reason)
    return record


def _follow(settings: Settings, record: DeployRecord) -> None:
    """The promotion gate's baseline follows what is served: after a rollback a candidate must beat the model
    that serves again, not the one rolled back from."""
    from recsys.registry.gate import production_tag, set_production_model

    if production_tag(settings) != record.model:
        set_production_model(settings, record.model, record.deployed_at, {"reason": record.reason})


def rollback(settings: Settings, reason: str | None = None) -> DeployRecord:
    """Make the previous production bento current again; return the new current entry.

    The entry rolled back from joins the history, so rolling back twice returns to the starting bento.
    """
    with _locked(settings):
        pointer = _read(settings)
        if pointer.current is None or not pointer.history:
            where = pointer_path(settings)
            raise RegistryError(
                f"nothing to roll back to: {where} has no earlier production bento. "
                "Deploy one by tag with `recsys bento deploy TAG` (tags: `recsys bento list`)."
            )
        previous, leaving = pointer.history[-1], pointer.current
        try:
            tag, model = _check_bento(settings, previous.bento)
        except RegistryError as exc:
            raise RegistryError(f"cannot roll back from {leaving.bento} to {previous.bento}: {exc}") from exc
        record = DeployRecord(tag, model, _now(), reason or f"rollback from {leaving.bento}")
        _write(settings, _Pointer(record, [*pointer.history, leaving]))
        _follow(settings, record)
    log.info("rolled back from %s to %s", leaving.bento, tag)
    return record


def promotion_reason(settings: Settings, model_tag: str) -> str | None:
    """Why ``model_tag``'s bento should become production, or None when the promotion gate did not promote it.

    It must be the gate's production model now and its newest gate decision must be a promotion; the reason
    reads ``promoted: <metric> <value> ...``. A refused candidate (or one since superseded) gets None.
    """
    from recsys.registry.gate import decisions, production_tag

    if production_tag(settings) != model_tag:
        return None
    mine = [d for d in decisions(settings) if d.get("candidate") == model_tag]
    if not mine or not mine[-1].get("promoted"):
        return None
    d = mine[-1]
    value = f"{d['metric']} {float(d['candidate_value']):.4f}"
    if d.get("production") is None or d.get("production_value") is None:
        return f"promoted: {value}, the first production model"
    return (
        f"promoted: {value} vs {float(d['production_value']):.4f} of {d['production']} "
        f"(margin {float(d['margin']):+.4f})"
    )


def deploy_if_promoted(settings: Settings, bento_tag: str, model_tag: str) -> DeployRecord | None:
    """Deploy ``bento_tag`` when the gate promoted ``model_tag`` (see :func:`promotion_reason`); else None."""
    reason = promotion_reason(settings, model_tag)
    if reason is None:
        log.info("%s was not promoted by the gate: the production pointer stays at %s", model_tag,
                 production_bento(settings))  # fmt: skip
        return None
    return deploy(settings, bento_tag, reason=reason)


@dataclass(frozen=True)
class BentoInfo:
    """One recommender bento in the store, with the model it names and that model's evaluation."""

    tag: str
    model: str | None  # None unless the bento names exactly one model
    metrics: dict[str, Any]  # the model's metadata ``metrics`` (``{}`` when absent or the model is gone)
    data_interval_start: str | None
    data_interval_end: str | None
    created_at: datetime
    is_production: bool
    promotion: str | None = None  # the model's status: candidate, promoted or refused (labels of the model)
    infra_validation: str | None = None  # passed or failed: this bento's newest infra validation (None: never)


def list_bentos(settings: Settings) -> list[BentoInfo]:
    """Every ``settings.bento_name`` bento in the store, newest first, marked when it is production."""
    bentoml = store.bentoml_for(settings)
    try:
        bentos = bentoml.bentos.list(settings.bento_name)
    except bentoml.exceptions.NotFound:
        bentos = []
    current = production_bento(settings)
    infos = []
    for bento in sorted(bentos, key=lambda b: b.info.creation_time, reverse=True):
        models = [str(model.tag) for model in bento.info.all_models]
        model_tag = models[0] if len(models) == 1 else None
        metadata: dict[str, Any] = {}
        labels: dict[str, str] = {}
        if model_tag is not None:
            try:
                stored = store.get_model(settings, model_tag)
                metadata, labels = stored.metadata, stored.labels
            except RegistryError:
                log.warning("bento %s names model %s, which is not in the store", bento.tag, model_tag)
        infos.append(
            BentoInfo(
                tag=str(bento.tag),
                model=model_tag,
                metrics=dict(metadata.get("metrics") or {}),
                data_interval_start=metadata.get("data_interval_start"),
                data_interval_end=metadata.get("data_interval_end"),
                created_at=bento.info.creation_time,
                is_production=str(bento.tag) == current,
                promotion=labels.get(store.PROMOTION_LABEL),
                infra_validation=_validation_status(metadata, str(bento.tag)),
            )
        )
    return infos


def _validation_status(metadata: dict[str, Any], bento_tag: str) -> str | None:
    found = (metadata.get(store.INFRA_METADATA) or {}).get(bento_tag)
    return None if not found else ("passed" if found.get("passed") else "failed")
