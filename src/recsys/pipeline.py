"""Stage functions: what a DAG task, a CLI command and a test each call for one data interval.

Every stage takes the settings and the interval ``[start, end)``, reads and writes the partitions and run
folders keyed by that interval (never ``now()``), and returns a small JSON-able summary (an Airflow XCom).
Heavy libraries are imported inside the stage that needs them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal

from recsys import lake
from recsys.config import Settings, project_dir
from recsys.errors import TrainingError
from recsys.timing import stage

log = logging.getLogger(__name__)


def run_dir(settings: Settings, start: datetime) -> Path:
    """Working folder of one data interval's training run."""
    return settings.home / "runs" / lake.day_key(start)


def _timings(settings: Settings) -> Path:
    return settings.home / "timings.jsonl"


def _label(start: datetime) -> dict[str, str]:
    return {"interval": f"{start:%Y-%m-%d}"}


def extract_stage(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """Sources → raw Parquet partitions of the interval."""
    from recsys.ingest.extract import extract_all

    with stage("extract", _timings(settings), **_label(start)):
        results = extract_all(settings, start, end)
    return {t: {"rows": r.rows, "quarantined": r.quarantined, "path": str(r.partition)} for t, r in results.items()}


def validate_raw_stage(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """GX gates on the interval's raw items and events; a failing partition is quarantined and the run stops."""
    from recsys.validation.stages import validate_raw_stage as gate

    with stage("validate_raw", _timings(settings), **_label(start)):
        return gate(settings, start, end)


def transform_stage(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """``dbt build`` (staging → intermediate → marts, with tests) on the configured warehouse, for the interval.

    With the PostgreSQL warehouse the raw tables are first synced with the lake (new or rewritten partitions
    copied in, removed ones deleted); DuckDB reads the lake in place.
    """
    from recsys.transform.dbt import build

    with stage("dbt_build", _timings(settings), **_label(start)):
        if settings.warehouse.target == "postgres":
            from recsys.transform.postgres import sync_raw

            copied = sync_raw(settings.lake, settings.warehouse.postgres)
            result = build(settings, target="postgres", interval=(start, end))
            return {**result.summary(), "raw_partitions_copied": copied}
        # spark: the raw tables are the metastore's tables over the lake (docs/scale-out.md); dbt-spark builds on them
        result = build(settings, target=settings.warehouse.target, interval=(start, end))
    return result.summary()


def validate_marts_stage(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """GX gates on the marts' rows of the interval; the run stops before Feast on failure."""
    from recsys.validation.stages import validate_marts_stage as gate

    with stage("validate_marts", _timings(settings), **_label(start)):
        return gate(settings, start, end)


def features_stage(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """Feast apply, then materialize ``[start - overlap, end)`` into the online store."""
    from recsys import features

    with stage("feast_materialize", _timings(settings), **_label(start)):
        features.apply(settings)
        since = start - settings.materialize_overlap
        features.materialize(settings, since, end, views=["user_stats", "item_stats", "user_recent_items"])
    return {"materialized_from": since.isoformat(), "materialized_to": end.isoformat()}


def encode_stage(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """Encode new or changed item texts with BERT, then materialize the embedding view.

    The embeddings land in the encoder's Parquet table and, with the PostgreSQL warehouse, also in the
    offline store's ``item_text_embedding`` table.
    """
    from recsys import features
    from recsys.model.encoder import encode_items
    from recsys.transform.warehouse import publish_embeddings, read_mart

    with stage("encode_items", _timings(settings), **_label(start)):
        items = read_mart(settings, "item_texts")
        counts = encode_items(settings, items, progress=True)  # a bar only when stderr is a terminal
        publish_embeddings(settings, counts.table, rebuilt=counts.rebuilt)  # the Postgres offline store's copy
        features.apply(settings)
        features.materialize(settings, start - settings.materialize_overlap, end, views=["item_text_embedding"])
    return dict(counts)


def run_features(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """One interval's features in this process: the stages of the ``recsys_features`` DAG, in its order.

    extract → raw gates → dbt build → mart gates → encode items → materialize → freshness; a gate that fails
    raises (and quarantines what it refused), so nothing after it runs, exactly as in the DAG.
    """
    stages = (
        extract_stage, validate_raw_stage, transform_stage, validate_marts_stage, encode_stage, features_stage,
        freshness_stage,
    )  # fmt: skip
    summary = {fn.__name__.removesuffix("_stage"): fn(settings, start, end) for fn in stages}
    _write_json(features_done(settings, start), {"interval": [start.isoformat(), end.isoformat()], **summary})
    return summary


def features_done(settings: Settings, start: datetime) -> Path:
    """The record ``run_features`` writes when an interval's features passed every stage."""
    return settings.home / "runs" / "features" / lake.day_key(start) / "done.json"


def backfill_features(
    settings: Settings, first: date, last: date, *, force: bool = False
) -> Iterator[tuple[date, dict[str, Any] | None]]:
    """Run the features of every day of ``[first, last]``, oldest first, through the same gated stages.

    Yields ``(day, summary)`` as each day finishes (``None`` for a day already done and skipped, unless
    ``force``), so a caller can show progress. Stops at the first day a gate refuses: later days would build on
    it. Resumable: a re-run skips the days that passed.
    """
    for day in lake.days_between(first, last):
        start, end = lake.day_interval(day)
        if features_done(settings, start).is_file() and not force:
            yield day, None
            continue
        yield day, run_features(settings, start, end)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def code_version() -> str:
    """The git commit of the code that ran (``unknown`` outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=project_dir(), capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=project_dir(), capture_output=True, text=True)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def fingerprint(*frames: Any) -> str:
    """A short content hash of the training data (stable across runs on identical data)."""
    import pandas as pd

    h = hashlib.sha256()
    for frame in frames:
        h.update(pd.util.hash_pandas_object(_hashable(frame), index=False).values.tobytes())
    return h.hexdigest()[:16]


def _hashable(frame: Any) -> Any:
    """``frame`` with list-valued cells (e.g. ``recent_item_ids``) as JSON strings, which pandas can hash."""
    listy = [c for c in frame.columns if frame[c].dtype == object and frame[c].map(_is_list).any()]
    return frame.assign(
        **{c: frame[c].map(lambda v: json.dumps([int(i) for i in v]) if _is_list(v) else v) for c in listy}
    )


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple) or (hasattr(value, "tolist") and getattr(value, "ndim", 0) == 1)


def training_set_stage(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """The point-in-time training set of a model trained at ``end`` (Feast), saved in the run folder."""
    from recsys.features import training_set

    with stage("training_set", _timings(settings), **_label(start)):
        data = training_set.build(settings, end)
        if data.train.empty:
            raise TrainingError(
                f"no positive interactions before {data.holdout_start:%Y-%m-%d}; extract more history "
                "(recsys backfill) before training."
            )
        data.save(run_dir(settings, start))
    return {"train_rows": len(data.train), "test_rows": len(data.test), "items": len(data.items)}


def train_stage(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """Two-tower training on the run's saved training set → the model artifact in the run folder."""
    from recsys.features.training_set import TrainingData
    from recsys.model.cluster import is_chief
    from recsys.model.evaluate import popular_item_ids
    from recsys.model.export import export_artifact
    from recsys.model.fit import EpochProgress, train

    with stage("train", _timings(settings), **_label(start)):
        out = run_dir(settings, start)
        data = TrainingData.load(out)
        trained = train(
            data.train,
            data.items,
            data.user_feature_names,
            data.item_feature_names,
            settings.model,
            impressions_df=data.impressions,
            callbacks=[EpochProgress()],  # a bar per epoch only when stderr is a terminal
        )
        metadata = {
            "data_interval_start": start.isoformat(),
            "data_interval_end": end.isoformat(),
            # The user side is what serving reads online; the item side fed the exported item matrix.
            "feature_service": f"{settings.feature_service_name}_user",
            "item_feature_service": f"{settings.feature_service_name}_item",
            # Impressions count only when the ranking loss read them (off: the fingerprint is as before).
            "dataset_fingerprint": fingerprint(
                data.train, data.test, *([data.impressions] if len(data.impressions) else [])
            ),
            "code_version": code_version(),
            "bert_checkpoint": settings.model.bert_checkpoint,
        }
        # Export aside, then swap: a re-run of the interval replaces its artifact, a failed one leaves the old.
        staging = out / f".artifact-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        export_artifact(trained, staging, popular_item_ids(data.train[["user_id", "item_id"]]), metadata)
        if not is_chief():  # multi-worker (TF_CONFIG): every worker exports, only the chief keeps it
            shutil.rmtree(staging)
            return {"artifact": None, "train_rows": len(data.train), "test_rows": len(data.test)}
        shutil.rmtree(out / "artifact", ignore_errors=True)
        os.replace(staging, out / "artifact")
    return {"artifact": str(out / "artifact"), "train_rows": len(data.train), "test_rows": len(data.test)}


def evaluate_stage(settings: Settings, start: datetime) -> dict[str, Any]:
    """The evaluation protocol on the run's training set; metrics go into the artifact's manifest, the HTML
    report into the run folder.

    The trained model (scored as the promotion gate and the service score it) against baselines tuned on a
    validation window carved by time from the run's own training positives (the ``model.holdout_days`` before
    the holdout): popularity, recency-weighted popularity and EASE. Then recall/ndcg/mrr@k on the holdout with
    bootstrap intervals, paired ratios model/baseline and the cold-item slice (``recsys.model.protocol``). The
    manifest keeps ``model`` and ``popularity`` as before (the holdout's users, the gate's numbers) and adds
    ``ease``, ``intervals``, ``ratios`` and ``cold_start``; the summary adds the report's path.
    """
    from datetime import timedelta

    from recsys.artifact import load_artifact
    from recsys.features import training_set
    from recsys.model.inference import holdout_scorer
    from recsys.model.protocol import holdout_metrics, run_protocol_on_holdout, run_split, write_report

    with stage("evaluate", _timings(settings), **_label(start)):
        out = run_dir(settings, start)
        data = training_set.TrainingData.load(out)
        artifact = load_artifact(out / "artifact")
        validation_start = data.holdout_start - timedelta(days=settings.model.holdout_days)
        split = run_split(data.train, data.test, validation_start)
        results = run_protocol_on_holdout(
            split,
            artifact.item_ids,
            holdout_scorer(artifact, data.test_user_features, data.train),
            k=settings.model.top_k,
            info={"loss": list(artifact.manifest.get("training_loss") or [])},
        )
        metrics = holdout_metrics(results)
        log.info("holdout metrics: %s", {n: metrics[n] for n in ("model", "popularity", "ease") if n in metrics})
        run = {"interval_start": start.isoformat(), "validation_start": validation_start.isoformat(),
               "holdout_start": data.holdout_start.isoformat(), "tuned": metrics["tuned"]}  # fmt: skip
        report = write_report({"runs": {f"run of {start:%Y-%m-%d}: holdout": results}, "run": run},
                              out / "report.html")  # fmt: skip
        manifest_path = out / "artifact" / "manifest.json"
        manifest = json.loads(manifest_path.read_text())
        manifest["metrics"] = metrics
        manifest["evaluation_report"] = str(report)
        manifest_path.write_text(json.dumps(manifest, indent=2))
    return {**metrics, "report": str(report)}


def register_stage(settings: Settings, start: datetime) -> dict[str, Any]:
    """Save the evaluated artifact into the BentoML model store."""
    from recsys.registry import save_model

    with stage("register", _timings(settings), **_label(start)):
        artifact = run_dir(settings, start) / "artifact"
        manifest = json.loads((artifact / "manifest.json").read_text())
        tag = save_model(settings, artifact, manifest)
    return {"model_tag": tag}


def gate_stage(settings: Settings, start: datetime, model_tag: str) -> dict[str, Any]:
    """Promote the candidate only if it beats production on this interval's holdout; the decision is recorded
    (decisions.jsonl) and stored on the model in the model store (label ``promotion: promoted|refused``)."""
    from dataclasses import asdict

    from recsys.features.training_set import TrainingData
    from recsys.registry.gate import evaluate_and_decide
    from recsys.registry.store import PROMOTION_LABEL, get_model

    with stage("gate", _timings(settings), **_label(start)):
        data = TrainingData.load(run_dir(settings, start))
        decision = evaluate_and_decide(settings, model_tag, data, settings.promotion_metric, settings.promotion_margin)
        status = get_model(settings, decision.candidate).labels.get(PROMOTION_LABEL)
    return {**asdict(decision), "status": status}


def bento_stage(settings: Settings, start: datetime, model_tag: str) -> dict[str, Any]:
    """Build a versioned bento that names exactly this model version (not deployed yet: see ``deploy_stage``)."""
    from recsys.registry import build_bento

    with stage("build_bento", _timings(settings), **_label(start)):
        bento_tag = build_bento(settings, model_tag)
    return {"bento_tag": bento_tag, "model_tag": model_tag}


def deploy_stage(settings: Settings, start: datetime, bento_tag: str, model_tag: str) -> dict[str, Any]:
    """Point production at the bento, if the promotion gate's newest decision on ``model_tag`` promoted it and the
    bento passed infra validation (``infra_validate_stage``).

    The production pointer moves only when the gate promoted the model (and it is still the gate's production
    model); a refused candidate's bento stays built but not deployed. A promoted model's bento that was not
    infra-validated, or failed, is refused with an ``InfraValidationError`` and production stays as it was.
    """
    from recsys.registry.infra import deploy_validated
    from recsys.registry.production import production_bento

    with stage("deploy", _timings(settings), **_label(start)):
        deployed = deploy_validated(settings, bento_tag, model_tag)
    return {
        "bento_tag": bento_tag,
        "model_tag": model_tag,
        "deployed": deployed is not None,
        "production_bento": production_bento(settings),
    }


def freshness_stage(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """Every feature view of ``orchestration.freshness_slas`` against its SLA at the interval end.

    FreshnessError names each view older than its SLA (its age and SLA); otherwise the per-view summary
    (``materialized_until``, ``age_s``, ``sla_s``, ``fresh``) is returned.
    """
    from recsys.features.freshness import require_fresh

    with stage("freshness", _timings(settings), **_label(start)):
        views = require_fresh(settings, end)
    return {view.view: view.summary() for view in views}


def infra_validate_stage(settings: Settings, start: datetime, bento_tag: str) -> dict[str, Any]:
    """Serve the new bento on a free port and check it before deploy (``recsys.registry.infra``): readiness, a
    user of the run's training set gets the model's answer, an unknown user the popularity fallback, a bad
    request a 4xx, and the p99 over ``orchestration.infra_requests`` requests stays within
    ``orchestration.infra_p99_budget_ms``.

    The summary (checks, p50/p99, bento tag) is recorded on the bento's model and in the run folder
    (``infra_validation.json``), passed or not; a failed check raises ``InfraValidationError`` naming it.
    """
    from recsys.errors import InfraValidationError
    from recsys.features.training_set import TrainingData
    from recsys.registry.infra import pick_users, validate_bento

    with stage("infra_validate", _timings(settings), **_label(start)):
        out = run_dir(settings, start)
        data = TrainingData.load(out)
        known, unknown = pick_users(data.train, data.test)
        try:
            summary = validate_bento(settings, bento_tag, known, unknown)
        except InfraValidationError as exc:
            if exc.summary is not None:
                (out / "infra_validation.json").write_text(json.dumps(exc.summary, indent=2))
            raise
        (out / "infra_validation.json").write_text(json.dumps(summary, indent=2))
    return summary


def dbt_prepare_stage(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """Before the DAG's dbt task group: DuckDB reads a complete raw lake; PostgreSQL gets its raw tables synced.

    The same steps :func:`transform_stage` takes before ``dbt build`` (the group then runs one task per model).
    """
    from recsys.transform.dbt import prepare

    target = settings.warehouse.target
    summary: dict[str, Any] = {"target": target}
    with stage("dbt_prepare", _timings(settings), **_label(start)):
        prepare(settings, target)
        if target == "postgres":
            from recsys.transform.postgres import sync_raw

            summary["raw_partitions_copied"] = sync_raw(settings.lake, settings.warehouse.postgres)
    return summary


def dbt_finish_stage(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    """After the DAG's dbt task group: DuckDB's empty marts become zero-row Parquet files (as after ``dbt build``)."""
    from recsys.transform.dbt import drop_placeholder_rows
    from recsys.transform.dbt_project import current_manifest, manifest_models

    target = settings.warehouse.target
    with stage("dbt_finish", _timings(settings), **_label(start)):
        models = manifest_models(current_manifest(settings)) if target == "duckdb" else []
        fixed = drop_placeholder_rows(settings.marts, models)
    return {"target": target, "emptied_marts": fixed}


def _evaluate_interval(settings: Settings, start: datetime, end: datetime) -> dict[str, Any]:
    return evaluate_stage(settings, start)


# The stages a DAG task runs for its run's interval alone (no other task's result), by the DAG's task id, with the
# period of that DAG: what `recsys stage <task> <day|week>` runs, in a pod of the recsys image on Kubernetes.
INTERVAL_STAGES: dict[str, tuple[Literal["day", "week"], Any]] = {
    "extract": ("day", extract_stage),
    "validate_raw": ("day", validate_raw_stage),
    "dbt_prepare": ("day", dbt_prepare_stage),
    "dbt_build": ("day", transform_stage),
    "dbt_finish": ("day", dbt_finish_stage),
    "validate_marts": ("day", validate_marts_stage),
    "encode_items": ("day", encode_stage),
    "materialize": ("day", features_stage),
    "check_freshness": ("day", freshness_stage),
    "training_set": ("week", training_set_stage),
    "train": ("week", train_stage),
    "evaluate": ("week", _evaluate_interval),
}
