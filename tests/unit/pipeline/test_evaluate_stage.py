"""The evaluate stage runs the evaluation protocol on the run's training set: tuned baselines, the trained model
scored as the promotion gate scores it, intervals, ratios, the cold-start slice, and a self-contained report."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from run_fixtures import COLD_ITEM, START, Run

from recsys.model.evaluate import evaluate, popularity_baseline
from recsys.model.protocol import RUN_BASELINE_GRIDS
from recsys.pipeline import evaluate_stage
from recsys.registry.gate import _score

K = 10


def test_the_manifest_keeps_the_gate_keys_and_adds_ease_intervals_ratios_and_cold_start(run: Run) -> None:
    summary = evaluate_stage(run.settings, START)

    metrics = json.loads((run.folder / "artifact" / "manifest.json").read_text())["metrics"]
    assert {"model", "popularity", "ease", "recency_popularity", "intervals", "ratios", "cold_start"} <= set(metrics)
    for name in ("model", "popularity", "ease"):
        assert {f"recall@{K}", f"ndcg@{K}", f"mrr@{K}", "users"} <= set(metrics[name])
        for metric in (f"recall@{K}", f"ndcg@{K}", f"mrr@{K}"):
            band = metrics["intervals"][name][metric]
            assert band["lo"] <= band["mean"] <= band["hi"]
            assert band["mean"] == pytest.approx(metrics[name][metric])
    # The model's number is the promotion gate's: the same scoring path (holdout_scorer) over the same users.
    gate_value = _score(run.folder / "artifact", run.data, f"ndcg@{K}", K)
    assert metrics["model"][f"ndcg@{K}"] == pytest.approx(gate_value, abs=1e-12)
    train, test = run.data.train[["user_id", "item_id"]], run.data.test[["user_id", "item_id"]]
    popularity = evaluate(popularity_baseline(train, run.artifact.item_ids), train, test, run.artifact.item_ids, K)
    assert {m: metrics["popularity"][m] for m in popularity} == pytest.approx(popularity)  # as before the protocol
    assert {f"model/popularity ndcg@{K}", f"model/ease ndcg@{K}"} <= set(metrics["ratios"])
    assert metrics["tuned"]["ease"] in RUN_BASELINE_GRIDS["ease"]
    assert metrics["cold_start"]["items"] == 1 and metrics["cold_start"]["users"] == 1  # item 1012, user 101
    assert "model" in metrics["cold_start"] and f"model/random ndcg@{K}" in metrics["cold_start"]["ratios"]
    assert {n: summary[n] for n in ("model", "popularity")} == {n: metrics[n] for n in ("model", "popularity")}
    assert COLD_ITEM not in set(run.data.train["item_id"])


def test_baselines_are_tuned_on_the_last_training_day_and_refit_on_all_training_positives(run: Run) -> None:
    metrics = evaluate_stage(run.settings, START)["split"]

    times = run.data.train["event_timestamp"]
    validation_start = run.data.holdout_start - timedelta(days=run.settings.model.holdout_days)
    assert metrics["validation"] == int((times >= validation_start).sum()) > 0
    assert metrics["train"] + metrics["validation"] == len(run.data.train)
    assert metrics["test"] == len(run.data.test)


def test_the_report_is_kept_in_the_run_folder_and_opens_without_network(run: Run) -> None:
    summary = evaluate_stage(run.settings, START)

    report = run.folder / "report.html"
    assert summary["report"] == str(report)
    page = report.read_text()
    assert page.count("data:image/png;base64") >= 2  # test metrics and cold start, embedded
    assert "ease" in page and "Cold start" in page and "model/popularity" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # nothing fetched from elsewhere
    assert "<script" not in page and "<link" not in page
    manifest = json.loads((run.folder / "artifact" / "manifest.json").read_text())
    assert manifest["evaluation_report"] == str(report)
