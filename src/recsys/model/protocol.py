"""The evaluation protocol of the benchmarks (docs/evaluation.md): tune, refit, test with intervals, cold start.

* Positives are implicit: rating >= 4 (MovieLens) or clicks (the simulator, the marts' ``label``).
* Splits (never random): ``per_user_temporal_split`` (primary: each user's last 20% of positives by time
  are test, the 10% before them validation, the rest training; users with fewer than 5 positives only
  train) and ``global_temporal_split`` (validation from the 70th, test from the 80th time percentile).
* ``run_protocol``: every model is tuned on validation only (fit on train), refit on train + validation
  with the chosen parameters and scored on test against the whole catalog, items a user saw in the fit
  set excluded; recall@k, ndcg@k, mrr@k with 95% bootstrap intervals over users, catalog coverage, and
  paired-bootstrap ratios. Cold start: test positives on items without a fit interaction, ranked among
  those cold items only.
* ``two_tower_fit``: the two-tower model (``recsys.model.fit.train``) as a protocol model.
* The training run's evaluation (``pipeline.evaluate_stage``): ``run_split`` carves validation by time from
  the run's training positives and tests on its holdout; ``run_protocol_on_holdout`` compares the trained model
  (``trained_model_spec``: not refit) with popularity, recency popularity and EASE tuned on that validation
  (``RUN_BASELINE_GRIDS``), over every holdout user as ``evaluate`` counts them; ``holdout_metrics`` makes the
  manifest's ``metrics`` of it.

The metric definitions are ``recsys.model.evaluate``'s; the pipeline's own single-holdout evaluation is there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.config import ModelSettings
from recsys.errors import TrainingError
from recsys.model.evaluate import (
    Positives,
    ScoreFn,
    UserMetrics,
    evaluation_users,
    positives_by_user,
    user_metrics,
)

log = logging.getLogger(__name__)

POSITIVE_COLUMNS = ["user_id", "item_id", "event_timestamp"]


@dataclass(frozen=True)
class Split:
    """Positives (user_id, item_id, event_timestamp) split by time into train, validation and test."""

    name: str
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame

    @property
    def fit(self) -> pd.DataFrame:
        """Train + validation: what the final models are refit on."""
        return pd.concat([self.train, self.validation], ignore_index=True)

    def sizes(self) -> dict[str, int]:
        """Rows per side."""
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def _utc_times(frame: pd.DataFrame) -> pd.Series:
    if "event_timestamp" not in frame.columns:
        raise TrainingError("positives lack event_timestamp; the splits are by time, never random.")
    return pd.to_datetime(frame["event_timestamp"], utc=True)


def positives_from_ratings(ratings: pd.DataFrame, threshold: float = 4.0) -> pd.DataFrame:
    """Implicit positives from explicit ratings: ``rating >= threshold`` (user_id, item_id, event_timestamp)."""
    missing = [c for c in ["rating", *POSITIVE_COLUMNS] if c not in ratings.columns]
    if missing:
        raise TrainingError(f"ratings lack columns {missing}; need user_id, item_id, rating, event_timestamp.")
    kept = ratings[ratings["rating"] >= threshold]
    return kept.assign(event_timestamp=_utc_times(kept))[POSITIVE_COLUMNS].reset_index(drop=True)


def positives_from_events(events: pd.DataFrame, kinds: Sequence[str] = ("click",)) -> pd.DataFrame:
    """Implicit positives from behaviour events: rows whose ``event_type`` is in ``kinds``."""
    time_column = "event_timestamp" if "event_timestamp" in events.columns else "occurred_at"
    kept = events[events["event_type"].isin(list(kinds))]
    out = pd.DataFrame(
        {
            "user_id": kept["user_id"].astype("int64"),
            "item_id": kept["item_id"].astype("int64"),
            "event_timestamp": pd.to_datetime(kept[time_column], utc=True),
        }
    )
    return out.reset_index(drop=True)


def per_user_temporal_split(
    positives: pd.DataFrame, validation: float = 0.1, test: float = 0.2, min_positives: int = 5
) -> Split:
    """Each user's last ``test`` share of positives (by time) is test, the ``validation`` share before it
    validation, the rest training (shares rounded up, at least one each); users with fewer than
    ``min_positives`` positives only train."""
    if not (0 < validation < 1 and 0 < test < 1 and validation + test < 1):
        raise ValueError(f"validation {validation} and test {test} must be in (0, 1) and sum below 1.")
    frame = positives.assign(event_timestamp=_utc_times(positives))
    frame = frame.sort_values(["user_id", "event_timestamp", "item_id"], kind="stable").reset_index(drop=True)
    n = frame.groupby("user_id")["item_id"].transform("size").to_numpy()
    rank = frame.groupby("user_id").cumcount().to_numpy()
    n_test = np.maximum(1, np.ceil(test * n)).astype(int)
    n_val = np.maximum(1, np.ceil(validation * n)).astype(int)
    eligible = n >= min_positives
    is_test = eligible & (rank >= n - n_test)
    is_val = eligible & ~is_test & (rank >= n - n_test - n_val)
    side = np.where(is_test, "test", np.where(is_val, "validation", "train"))
    parts = {k: frame[side == k].reset_index(drop=True) for k in ("train", "validation", "test")}
    return Split("per_user_temporal", parts["train"], parts["validation"], parts["test"])


def global_temporal_split(positives: pd.DataFrame, validation_from: float = 0.7, test_from: float = 0.8) -> Split:
    """Validation from the ``validation_from`` quantile of event time, test from the ``test_from`` quantile."""
    if not 0 < validation_from < test_from < 1:
        raise ValueError(f"need 0 < validation_from ({validation_from}) < test_from ({test_from}) < 1.")
    frame = positives.assign(event_timestamp=_utc_times(positives))
    times = frame["event_timestamp"]
    t_val, t_test = times.quantile(validation_from), times.quantile(test_from)
    parts = (frame[times < t_val], frame[(times >= t_val) & (times < t_test)], frame[times >= t_test])
    return Split("global_temporal", *(p.reset_index(drop=True) for p in parts))


def bootstrap_indices(n_users: int, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """``[n_boot, n_users]`` user resamples (with replacement), shared by every model for paired intervals."""
    return np.random.default_rng(seed).integers(0, n_users, size=(n_boot, n_users))


def interval(values: np.ndarray, resamples: np.ndarray) -> dict[str, float]:
    """Mean of per-user ``values`` with its 95% percentile bootstrap interval over users."""
    means = values[resamples].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "lo": float(lo), "hi": float(hi)}


def ratio_interval(a: np.ndarray, b: np.ndarray, resamples: np.ndarray) -> dict[str, float]:
    """mean(a) / mean(b) over the same users, with a paired 95% bootstrap interval."""
    num, den = a[resamples].mean(axis=1), b[resamples].mean(axis=1)
    ratios = num / np.maximum(den, 1e-12)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return {"mean": float(a.mean() / max(b.mean(), 1e-12)), "lo": float(lo), "hi": float(hi)}


def summarize(metrics: UserMetrics, k: int, resamples: np.ndarray) -> dict[str, Any]:
    """JSON-able metrics with intervals: recall@k, ndcg@k, mrr@k, coverage, users."""
    return {
        f"recall@{k}": interval(metrics.recall, resamples),
        f"ndcg@{k}": interval(metrics.ndcg, resamples),
        f"mrr@{k}": interval(metrics.mrr, resamples),
        "coverage": metrics.coverage,
        "users": len(metrics.users),
    }


@dataclass
class FitResult:
    """What a model's fit returns: its score function and anything to report (e.g. ``loss`` per epoch)."""

    score: ScoreFn
    info: dict[str, Any] = field(default_factory=dict)


FitFn = Callable[..., "ScoreFn | FitResult"]
"""``fit(positives, item_ids, **params)`` -> a score function (or a ``FitResult``)."""


@dataclass
class ModelSpec:
    """A model of the comparison: its fit function and the parameter grid tuned on validation."""

    fit: FitFn
    grid: list[dict[str, Any]] = field(default_factory=lambda: [{}])
    baseline: bool = True
    cold_only: bool = False


def _fit(spec: ModelSpec, positives: pd.DataFrame, item_ids: np.ndarray, params: dict[str, Any]) -> FitResult:
    out = spec.fit(positives, item_ids, **params)
    return out if isinstance(out, FitResult) else FitResult(out)


def tune(
    spec: ModelSpec, split: Split, item_ids: np.ndarray, k: int, users: np.ndarray | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The grid point with the best validation ndcg@k (fit on train only), and every point's score."""
    if len(spec.grid) == 1:
        return dict(spec.grid[0]), []
    if users is None:
        users = evaluation_users(positives_by_user(split.train), positives_by_user(split.validation))
    if len(users) == 0:
        raise TrainingError(
            f"{split.name}: no validation user has an unseen validation positive and a train positive, so the "
            "grid cannot be tuned: give the split more history (or a longer validation window)."
        )
    table = []
    for params in spec.grid:
        fitted = _fit(spec, split.train, item_ids, params)
        score = user_metrics(fitted.score, split.train, split.validation, item_ids, k, users=users)
        table.append({"params": params, f"val_ndcg@{k}": float(score.ndcg.mean())})
    best = max(table, key=lambda row: row[f"val_ndcg@{k}"])
    return dict(best["params"]), table


def holdout_users(fit_map: Positives, target_map: Positives, candidates: np.ndarray | None = None) -> np.ndarray:
    """Users with a relevant target (unseen in fit, among the candidates), with or without fit positives."""
    allowed = None if candidates is None else set(np.asarray(candidates).tolist())
    users = []
    for user, items in target_map.items():
        relevant = set(items) - set(fit_map.get(user, ()))
        if relevant if allowed is None else relevant & allowed:
            users.append(user)
    return np.array(sorted(users), dtype=np.int64)


def cold_items(fit_positives: pd.DataFrame, item_ids: np.ndarray) -> np.ndarray:
    """Catalog items without any interaction in the fit set."""
    return np.setdiff1d(np.asarray(item_ids, np.int64), fit_positives["item_id"].to_numpy(np.int64))


def run_protocol(
    split: Split,
    item_ids: np.ndarray,
    models: Mapping[str, ModelSpec],
    k: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
    reference: str = "popularity",
    keep: dict[str, FitResult] | None = None,
    warm_users_only: bool = True,
    compare_with: Sequence[str] = (),
) -> dict[str, Any]:
    """Tune each model on validation, refit on train + validation, evaluate on test; cold start apart.

    Returns a JSON-able dict: ``split`` sizes, ``models`` (metrics with intervals, chosen params, tuning
    table, fit seconds, ``info`` such as training curves), ``ratios`` (each model / ``reference``, / the best
    baseline and / every baseline named in ``compare_with``, paired bootstrap) and ``cold_start`` (the same on
    the cold-item slice). Test users need an unseen test positive and, with ``warm_users_only`` (the
    benchmarks), a fit positive; without it every user with an unseen test positive counts, as in
    ``recsys.model.evaluate.evaluate`` (the pipeline's holdout and the promotion gate).
    """
    item_ids = np.asarray(item_ids, np.int64)
    fit_pos, fit_map = split.fit, positives_by_user(split.fit)
    test_map = positives_by_user(split.test)
    cold = cold_items(fit_pos, item_ids)
    users, cold_users = (
        (evaluation_users(fit_map, test_map), evaluation_users(fit_map, test_map, cold))
        if warm_users_only
        else (holdout_users(fit_map, test_map), holdout_users(fit_map, test_map, cold))
    )
    if len(users) == 0:
        needs = " and a fit positive" if warm_users_only else ""
        raise TrainingError(f"{split.name}: no test user has an unseen test positive{needs}.")
    resamples, cold_resamples = (
        bootstrap_indices(len(users), n_boot, seed),
        bootstrap_indices(len(cold_users), n_boot, seed),
    )
    per_user: dict[str, UserMetrics] = {}
    cold_per_user: dict[str, UserMetrics] = {}
    results: dict[str, Any] = {"split": {"name": split.name, **split.sizes()}, "k": k, "models": {}}
    for name, spec in models.items():
        started = time.perf_counter()
        params, table = (dict(spec.grid[0]), []) if spec.cold_only else tune(spec, split, item_ids, k)
        fitted = _fit(spec, fit_pos, item_ids, params)
        seconds = time.perf_counter() - started
        entry: dict[str, Any] = {
            "params": params,
            "tuning": table,
            "seconds": seconds,
            "info": fitted.info,
            "baseline": spec.baseline,
            "cold_only": spec.cold_only,
        }
        if not spec.cold_only:
            per_user[name] = user_metrics(fitted.score, fit_map, test_map, item_ids, k, users=users)
            entry["test"] = summarize(per_user[name], k, resamples)
        if len(cold_users):
            cold_per_user[name] = user_metrics(fitted.score, fit_map, test_map, item_ids, k, cold_users, cold)
            entry["cold_start"] = summarize(cold_per_user[name], k, cold_resamples)
        results["models"][name] = entry
        if keep is not None:
            keep[name] = fitted
        log.info("%s %s: %s (%.1f s)", split.name, name, entry.get("test", entry.get("cold_start")), seconds)
    results["users"] = users.tolist()
    results["ratios"] = _ratios(per_user, models, reference, k, resamples, compare_with)
    results["cold_start"] = {
        "items": len(cold),
        "users": len(cold_users),
        "ratios": _cold_ratios(cold_per_user, models, k, cold_resamples),
    }
    return results


def _ratios(
    per_user: Mapping[str, UserMetrics],
    models: Mapping[str, ModelSpec],
    reference: str,
    k: int,
    resamples: np.ndarray,
    compare_with: Sequence[str] = (),
) -> dict[str, Any]:
    baselines = [n for n in per_user if models[n].baseline]
    best = max(baselines, key=lambda n: per_user[n].ndcg.mean()) if baselines else None
    out: dict[str, Any] = {"best_baseline": best}
    for name, m in per_user.items():
        if models[name].baseline:
            continue
        for other in dict.fromkeys([reference, *([best] if best else []), *compare_with]):
            if other in per_user:
                out[f"{name}/{other} ndcg@{k}"] = ratio_interval(m.ndcg, per_user[other].ndcg, resamples)
    return out


def _cold_ratios(
    per_user: Mapping[str, UserMetrics], models: Mapping[str, ModelSpec], k: int, resamples: np.ndarray
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    refs = [n for n in per_user if models[n].cold_only]
    for name, m in per_user.items():
        if models[name].baseline:
            continue
        for ref in refs:
            out[f"{name}/{ref} ndcg@{k}"] = ratio_interval(m.ndcg, per_user[ref].ndcg, resamples)
            out[f"{name}/{ref} recall@{k}"] = ratio_interval(m.recall, per_user[ref].recall, resamples)
    return out


def write_report(results: Mapping[str, Any], path: Path) -> Path:
    """Write ``results`` (``run_protocol`` output, or ``{"runs": {name: output}, ...}``) as an HTML report."""
    from recsys.model.report import write_html_report

    return write_html_report(results, Path(path))


# --- the two-tower model as a protocol model --------------------------------------------------------


def item_popularity_features(positives: pd.DataFrame, item_ids: np.ndarray) -> pd.DataFrame:
    """Item features from the fit positives only: ``item_log_positives`` and ``item_log_recent`` (1-year half-life)."""
    counts = positives["item_id"].value_counts().reindex(item_ids).fillna(0.0).to_numpy()
    times = pd.to_datetime(positives["event_timestamp"], utc=True)
    age = (times.max() - times).dt.total_seconds().to_numpy() / 86400.0
    recent = pd.Series(0.5 ** (age / 365.0), index=positives["item_id"].to_numpy()).groupby(level=0).sum()
    return pd.DataFrame(
        {
            "item_id": item_ids,
            "item_log_positives": np.log1p(counts),
            "item_log_recent": np.log1p(recent.reindex(item_ids).fillna(0.0).to_numpy()),
        }
    )


ITEM_POPULARITY_FEATURES = ["item_log_positives", "item_log_recent"]


def two_tower_fit(items_df: pd.DataFrame, cfg: ModelSettings) -> FitFn:
    """A protocol ``fit`` for the two-tower model (``recsys.model.fit.train``) on ``items_df``.

    ``items_df``: ``item_id``, ``embedding`` (+ ``text``), in the evaluated ``item_ids`` order. Item
    features are recomputed from each fit set (``item_popularity_features``); the user tower sees the
    user's last positives of the fit set as its recent items. Grid params name ``ModelSettings`` fields
    (applied to ``cfg`` with ``model_copy``; ``train`` refuses unknown names).
    """

    def fit(positives: pd.DataFrame, item_ids: np.ndarray, **params: Any) -> FitResult:
        from recsys.model.data import recent_items_by_user
        from recsys.model.fit import train
        from recsys.model.inference import model_scorer

        if not np.array_equal(items_df["item_id"].to_numpy(np.int64), np.asarray(item_ids, np.int64)):
            raise TrainingError("items_df must list the evaluated item_ids in the same order.")
        settings = cfg.model_copy(update=params)
        feats = item_popularity_features(positives, np.asarray(item_ids, np.int64))
        items = items_df.merge(feats, on="item_id", how="left")
        train_df = positives.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
        trained = train(train_df, items, [], ITEM_POPULARITY_FEATURES, settings)
        recent = recent_items_by_user(positives, max(settings.history_length, 1))
        users = pd.DataFrame(index=pd.Index(sorted(recent), name="user_id"))
        info = {
            "loss": trained.history,
            "train_seconds": trained.train_seconds,
            "examples": trained.examples,
            "options": trained.options,
        }
        return FitResult(model_scorer(trained, users, recent), info)

    return fit


# --- the training run's evaluation (the pipeline's evaluate stage) -----------------------------------

MODEL = "model"
"""The trained model's name in the run's evaluation (the manifest's ``metrics["model"]``)."""

RUN_BASELINE_GRIDS: dict[str, list[dict[str, Any]]] = {
    "popularity": [{}],
    "recency_popularity": [{"half_life_days": d} for d in (3.0, 1.0, 7.0, 30.0)],
    "ease": [{"l2": v} for v in (100.0, 10.0, 30.0, 300.0, 1000.0)],
}
"""The run's baselines and the grids they are tuned on (small catalogs: EASE is one item-item inverse a fit)."""


def run_split(
    train: pd.DataFrame, holdout: pd.DataFrame, validation_start: datetime | pd.Timestamp, name: str = "run_holdout"
) -> Split:
    """The training run's split: its training positives before ``validation_start`` train and those from it on
    validate (by time, never random), its holdout is the test side; the fit side is the whole training set.

    ``train`` and ``holdout``: positives (``user_id``, ``item_id``, ``event_timestamp``; other columns ignored).
    """
    frame = train[POSITIVE_COLUMNS].assign(event_timestamp=_utc_times(train))
    times = frame["event_timestamp"]
    cut = pd.Timestamp(validation_start)
    cut = cut.tz_localize("UTC") if cut.tzinfo is None else cut.tz_convert("UTC")
    before, after = frame[times < cut], frame[times >= cut]
    if before.empty or after.empty:
        side = "training" if before.empty else "validation"
        raise TrainingError(
            f"the {side} side of the validation split at {cut} is empty ({len(frame)} training positives from "
            f"{times.min()} to {times.max()}): extract more history before training, or shorten model.holdout_days."
        )
    test = holdout[POSITIVE_COLUMNS].assign(event_timestamp=_utc_times(holdout))
    return Split(name, *(part.reset_index(drop=True) for part in (before, after, test)))


def trained_model_spec(score: ScoreFn, info: dict[str, Any] | None = None) -> ModelSpec:
    """An already trained model as a protocol model: nothing is tuned or refit, every fit returns ``score``."""

    def fit(positives: pd.DataFrame, item_ids: np.ndarray) -> FitResult:
        return FitResult(score, dict(info or {}))

    return ModelSpec(fit, baseline=False)


def run_models(score: ScoreFn, info: dict[str, Any] | None = None) -> dict[str, ModelSpec]:
    """The run's comparison: the tuned baselines of ``RUN_BASELINE_GRIDS``, the trained model (``MODEL``), and
    seeded random scores as the reference of the cold-start slice (no baseline can rank an unseen item)."""
    from recsys.model import baselines

    specs = {name: ModelSpec(getattr(baselines, name), grid) for name, grid in RUN_BASELINE_GRIDS.items()}
    return {
        **specs,
        MODEL: trained_model_spec(score, info),
        "random": ModelSpec(baselines.random_scores, cold_only=True),
    }


def run_protocol_on_holdout(
    split: Split,
    item_ids: np.ndarray,
    score: ScoreFn,
    k: int = 10,
    n_boot: int = 1000,
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``run_protocol`` of the trained model (``score``, as the gate and the service score it) against the run's
    tuned baselines on the run's holdout: the same test users as ``recsys.model.evaluate.evaluate``, so the
    model's and popularity's means equal the pipeline's single-holdout numbers."""
    return run_protocol(
        split, item_ids, run_models(score, info), k, n_boot, warm_users_only=False, compare_with=["ease"]
    )


def holdout_metrics(results: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's ``metrics`` from ``run_protocol_on_holdout``'s results.

    One flat entry per model (``model``, ``popularity``, ``ease``, ...) with ``recall@k``, ``ndcg@k``,
    ``mrr@k`` (means), ``coverage`` and ``users`` (the keys the promotion gate and ``recsys bento list`` read),
    then ``intervals`` (each model's 95% bootstrap intervals), ``ratios`` (paired, ``model/<baseline>``),
    ``cold_start`` (the cold-item slice, when the holdout has one), ``tuned`` (each baseline's chosen params)
    and ``split`` (sizes).
    """
    k = int(results["k"])
    names = [f"recall@{k}", f"ndcg@{k}", f"mrr@{k}"]
    metrics: dict[str, Any] = {}
    intervals: dict[str, Any] = {}
    for name, entry in results["models"].items():
        if "test" not in entry:
            continue
        test = entry["test"]
        metrics[name] = {
            **{m: float(test[m]["mean"]) for m in names},
            "coverage": float(test["coverage"]),
            "users": float(test["users"]),
        }
        intervals[name] = {m: dict(test[m]) for m in names}
    cold = results.get("cold_start", {})
    metrics["intervals"] = intervals
    metrics["ratios"] = dict(results.get("ratios", {}))
    if cold.get("users"):
        metrics["cold_start"] = {
            "items": int(cold["items"]),
            "users": int(cold["users"]),
            **{n: dict(e["cold_start"]) for n, e in results["models"].items() if "cold_start" in e},
            "ratios": dict(cold.get("ratios", {})),
        }
    metrics["tuned"] = {n: e["params"] for n, e in results["models"].items() if e["baseline"] and not e["cold_only"]}
    metrics["split"] = dict(results["split"])
    return metrics
