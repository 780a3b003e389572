"""Promotion gate: a candidate replaces the production model only if it beats it on the same holdout.

The production model is re-scored on the candidate's own holdout (same users, same candidate items, same
protocol), so the comparison is like for like even when the two were trained on different data intervals.
Every decision, promoted or not, is appended to ``{home}/registry/decisions.jsonl`` with its reason (the
history), and stored on the candidate in the model store (label ``promotion: promoted|refused``, the decision in
its metadata); the production pointer is ``{home}/registry/production.json``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.errors import RegistryError

if TYPE_CHECKING:
    from recsys.config import Settings
    from recsys.features.training_set import TrainingData


@dataclass(frozen=True)
class GateDecision:
    """What the gate decided for one candidate, and why."""

    candidate: str
    production: str | None
    metric: str
    candidate_value: float
    production_value: float | None
    margin: float
    promoted: bool
    reason: str
    decided_at: str


def _registry_dir(settings: Settings) -> Path:
    return settings.home / "registry"


def production_tag(settings: Settings) -> str | None:
    """The tag of the current production model, or None before the first promotion."""
    pointer = _registry_dir(settings) / "production.json"
    return str(json.loads(pointer.read_text())["tag"]) if pointer.exists() else None


def decide(
    candidate: str, candidate_value: float, production: str | None, production_value: float | None,
    metric: str, margin: float,
) -> GateDecision:  # fmt: skip
    """Promote when there is no production model, or the candidate beats it by more than ``margin``."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    if production is None or production_value is None:
        reason = "no production model yet: the first candidate is promoted"
        return GateDecision(candidate, None, metric, candidate_value, None, margin, True, reason, now)
    gain = candidate_value - production_value
    promoted = gain > margin
    verdict = "beats" if promoted else "does not beat"
    reason = (
        f"{metric} {candidate_value:.4f} vs production {production} {production_value:.4f} on the same holdout: "
        f"gain {gain:+.4f} {verdict} the required margin {margin:+.4f}"
    )
    return GateDecision(candidate, production, metric, candidate_value, production_value, margin, promoted, reason, now)


def _score(artifact_dir: Path, data: TrainingData, metric: str, k: int) -> float:
    from recsys.artifact import load_artifact
    from recsys.model.evaluate import evaluate
    from recsys.model.inference import holdout_scorer

    artifact = load_artifact(artifact_dir)
    metrics = evaluate(
        holdout_scorer(artifact, data.test_user_features, data.train),
        data.train[["user_id", "item_id"]],
        data.test[["user_id", "item_id"]],
        artifact.item_ids,
        k,
    )
    if metric not in metrics:
        raise RegistryError(f"promotion metric {metric!r} is not computed; available: {sorted(metrics)}.")
    return float(metrics[metric])


def _record(settings: Settings, decision: GateDecision) -> None:
    folder = _registry_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "decisions.jsonl").open("a") as fh:
        fh.write(json.dumps(asdict(decision)) + "\n")
    if decision.promoted:
        set_production_model(settings, decision.candidate, decision.decided_at, {"decision": asdict(decision)})


def set_production_model(settings: Settings, tag: str, since: str, detail: dict[str, Any] | None = None) -> None:
    """Make ``tag`` the model the next candidate must beat (the gate promotes; deploy and rollback follow the
    production bento's model here, so the baseline is always the model being served)."""
    folder = _registry_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".production.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"tag": tag, "since": since, **(detail or {})}))
    os.replace(tmp, folder / "production.json")


def evaluate_and_decide(
    settings: Settings, candidate_tag: str, data: TrainingData, metric: str = "ndcg@10", margin: float = 0.0
) -> GateDecision:
    """Score candidate and production on ``data``'s holdout, decide, and record the decision."""
    from recsys.registry.store import get_model

    k = int(metric.split("@", 1)[1]) if "@" in metric else settings.model.top_k
    candidate = get_model(settings, candidate_tag)
    production = production_tag(settings)
    if production == candidate.tag:
        raise RegistryError(f"{candidate.tag} is already the production model; register a new candidate first.")
    cand_value = _score(candidate.path, data, metric, k)
    prod_value = _score(get_model(settings, production).path, data, metric, k) if production else None
    decision = decide(candidate.tag, cand_value, production, prod_value, metric, margin)
    mark_decision(settings, decision)  # first: if the store refuses it, nothing is recorded and a retry starts clean
    _record(settings, decision)
    logging.getLogger(__name__).info("promotion gate: %s", decision.reason)
    return decision


def mark_decision(settings: Settings, decision: GateDecision) -> None:
    """Store the decision on the candidate in the model store: label ``promotion: promoted|refused`` and the
    decision (metric, both values, margin, reason, time) as its ``promotion`` metadata."""
    from recsys.registry.store import PROMOTED, PROMOTION_LABEL, REFUSED, set_model_status

    status = PROMOTED if decision.promoted else REFUSED
    set_model_status(settings, decision.candidate, {PROMOTION_LABEL: status}, {"promotion": asdict(decision)})


def decisions(settings: Settings) -> list[dict[str, Any]]:
    """Every recorded gate decision, oldest first."""
    path = _registry_dir(settings) / "decisions.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
