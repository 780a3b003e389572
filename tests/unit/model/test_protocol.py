"""The benchmarks' evaluation protocol: time splits, per-user metrics, bootstrap intervals, tuning and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.errors import TrainingError
from recsys.model.evaluate import ScoreFn, evaluate, user_metrics
from recsys.model.protocol import (
    RUN_BASELINE_GRIDS,
    ModelSpec,
    Split,
    bootstrap_indices,
    global_temporal_split,
    holdout_metrics,
    interval,
    per_user_temporal_split,
    positives_from_events,
    positives_from_ratings,
    ratio_interval,
    run_protocol,
    run_protocol_on_holdout,
    run_split,
    tune,
    write_report,
)

ITEMS = np.array([10, 20, 30, 40], np.int64)


def _positives(per_user: dict[int, list[int]]) -> pd.DataFrame:
    rows = [
        (u, i, pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(days=d))
        for u, items in per_user.items()
        for d, i in enumerate(items)
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp"])


def test_per_user_split_takes_each_users_last_positives() -> None:
    split = per_user_temporal_split(_positives({1: list(range(100, 110)), 2: [1, 2, 3, 4]}))
    assert split.test.query("user_id == 1")["item_id"].tolist() == [108, 109]  # last 20% of 10
    assert split.validation.query("user_id == 1")["item_id"].tolist() == [107]  # the 10% before
    assert split.train.query("user_id == 2")["item_id"].tolist() == [1, 2, 3, 4]  # < 5 positives: train only
    assert split.sizes() == {"train": 11, "validation": 1, "test": 2} and len(split.fit) == 12


def test_global_split_by_time_quantiles() -> None:
    split = global_temporal_split(_positives({1: list(range(10))}))
    assert split.train["item_id"].tolist() == list(range(7))
    assert split.validation["item_id"].tolist() == [7] and split.test["item_id"].tolist() == [8, 9]
    with pytest.raises(ValueError, match="validation_from"):
        global_temporal_split(_positives({1: [1]}), 0.8, 0.7)


def test_positives_from_ratings_and_events() -> None:
    ratings = _positives({1: [1, 2]}).assign(rating=[4.0, 3.5])
    assert positives_from_ratings(ratings)["item_id"].tolist() == [1]
    events = _positives({1: [1, 2]}).assign(event_type=["click", "impression"])
    assert positives_from_events(events)["item_id"].tolist() == [1]


def test_user_metrics_hand_values_and_candidates() -> None:
    def fixed(users: np.ndarray) -> np.ndarray:
        return np.tile([4.0, 3.0, 2.0, 1.0], (len(users), 1))

    fit = {1: {10}, 2: {40}}
    target = {1: {30}, 2: {10, 30}}
    m = user_metrics(fixed, fit, target, ITEMS, k=2)
    # user 1 ranks [20, 30]: hit at 2; user 2 ranks [10, 20]: hit at 1 of 2 relevant.
    np.testing.assert_allclose(m.recall, [1.0, 0.5])
    np.testing.assert_allclose(m.mrr, [0.5, 1.0])
    np.testing.assert_allclose(m.ndcg, [1 / math.log2(3), 1 / (1 + 1 / math.log2(3))])
    assert m.coverage == pytest.approx(3 / 4)
    cold = user_metrics(fixed, fit, target, ITEMS, k=1, candidates=np.array([30, 40]))
    np.testing.assert_array_equal(cold.users, [1, 2])  # 40 was seen by user 2, so 30 ranks first for both
    np.testing.assert_allclose(cold.recall, [1.0, 1.0])


def test_bootstrap_intervals_are_paired_and_contain_the_mean() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random(200), rng.random(200) * 0.5
    resamples = bootstrap_indices(200, 500, seed=1)
    ci = interval(a, resamples)
    assert ci["lo"] < ci["mean"] < ci["hi"]
    ratio = ratio_interval(a, b, resamples)
    assert ratio["mean"] == pytest.approx(a.mean() / b.mean()) and ratio["lo"] < ratio["mean"] < ratio["hi"]
    assert ratio_interval(a, a, resamples) == pytest.approx({"mean": 1.0, "lo": 1.0, "hi": 1.0})


def test_run_protocol_tunes_on_validation_and_writes_a_report(tmp_path: Path) -> None:
    from recsys.model import baselines

    likes = {u: [100 + (u % 2) * 10 + (j + u // 2) % 10 for j in range(10)] for u in range(1, 21)}
    items = np.arange(100, 121, dtype=np.int64)  # item 120 is never seen: cold
    positives = _positives(likes)
    positives.loc[positives.index[-1], "item_id"] = 120  # one test positive on the cold item
    split = per_user_temporal_split(positives)
    calls: list[dict[str, float]] = []

    def knn(pos: pd.DataFrame, ids: np.ndarray, neighbours: int) -> ScoreFn:
        calls.append({"n": neighbours, "rows": len(pos)})
        return baselines.item_knn(pos, ids, neighbours)

    models = {
        "popularity": ModelSpec(baselines.popularity),
        "item_knn": ModelSpec(knn, [{"neighbours": 1}, {"neighbours": 5}], baseline=False),
        "random": ModelSpec(baselines.random_scores, cold_only=True),
    }
    results = run_protocol(split, items, models, k=5, n_boot=50)
    assert [c["rows"] for c in calls] == [len(split.train)] * 2 + [len(split.fit)]  # tuned on train, refit on fit
    tuning = results["models"]["item_knn"]["tuning"]
    assert [row["params"] for row in tuning] == [{"neighbours": 1}, {"neighbours": 5}]
    assert results["models"]["item_knn"]["params"] == max(tuning, key=lambda row: row["val_ndcg@5"])["params"]
    test = results["models"]["item_knn"]["test"]
    assert test["users"] == 20 and test["ndcg@5"]["mean"] > results["models"]["popularity"]["test"]["ndcg@5"]["mean"]
    assert "item_knn/popularity ndcg@5" in results["ratios"] and results["cold_start"]["items"] == 1
    assert results["cold_start"]["users"] == 1 and "test" not in results["models"]["random"]
    assert "item_knn/random ndcg@5" in results["cold_start"]["ratios"]
    results["models"]["item_knn"]["info"] = {"loss": [3.0, 2.0, 1.5]}
    page = write_report({"runs": {"tiny": results}, "note": 1}, tmp_path / "r" / "report.html").read_text()
    assert page.count("data:image/png;base64") == 3 and "item_knn" in page and "Cold start" in page


# --- the training run's evaluation -------------------------------------------------------------------


def _run_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training positives of users 1..20 on days 0..8 (two topics), a holdout on day 9 (each user's tenth topic
    item), with user 99, who has no training positive, and a positive on item 120, which has none either."""
    likes = {u: [100 + (u % 2) * 10 + (j + u // 2) % 10 for j in range(10)] for u in range(1, 21)}
    positives = _positives(likes)
    day9 = pd.Timestamp("2024-01-10", tz="UTC")
    train, holdout = positives[positives["event_timestamp"] < day9], positives[positives["event_timestamp"] >= day9]
    extra = pd.DataFrame({"user_id": [99, 1], "item_id": [105, 120], "event_timestamp": [day9, day9]})
    return train.reset_index(drop=True), pd.concat([holdout, extra], ignore_index=True)


def test_run_split_carves_validation_from_the_training_positives_by_time() -> None:
    train, holdout = _run_data()
    start = pd.Timestamp("2024-01-09", tz="UTC")

    split = run_split(train.assign(extra_column=1), holdout, start.to_pydatetime())

    assert split.train["event_timestamp"].max() < start <= split.validation["event_timestamp"].min()
    assert len(split.fit) == len(train) and len(split.test) == len(holdout)
    assert list(split.fit.columns) == ["user_id", "item_id", "event_timestamp"]
    with pytest.raises(TrainingError, match=r"validation side of the validation split .* is empty"):
        run_split(train, holdout, pd.Timestamp("2024-02-01", tz="UTC"))
    with pytest.raises(TrainingError, match=r"training side .* is empty"):
        run_split(train, holdout, pd.Timestamp("2023-12-01"))  # naive: UTC


def test_the_run_protocol_scores_every_holdout_user_like_evaluate_and_compares_with_ease() -> None:
    from recsys.model import baselines

    train, holdout = _run_data()
    items = np.arange(100, 121, dtype=np.int64)
    split = run_split(train, holdout, pd.Timestamp("2024-01-09", tz="UTC"))
    model = baselines.item_knn(train, items, neighbours=5)

    results = run_protocol_on_holdout(split, items, model, k=5, n_boot=50, info={"loss": [2.0, 1.0]})
    metrics = holdout_metrics(results)

    expected = evaluate(model, train, holdout, items, 5)  # the pipeline's single-holdout numbers
    assert {m: metrics["model"][m] for m in expected} == pytest.approx(expected)
    assert metrics["model"]["users"] == 21  # user 99 (no training positive) counts, as in evaluate
    pop = evaluate(baselines.popularity(train, items), train, holdout, items, 5)
    assert {m: metrics["popularity"][m] for m in pop} == pytest.approx(pop)
    assert set(metrics["tuned"]) == {"popularity", "recency_popularity", "ease"}
    assert [row["params"] for row in results["models"]["ease"]["tuning"]] == RUN_BASELINE_GRIDS["ease"]
    assert {"model/popularity ndcg@5", "model/ease ndcg@5"} <= set(metrics["ratios"])
    assert metrics["cold_start"]["items"] == 1 and metrics["cold_start"]["users"] == 1
    assert "model/random ndcg@5" in metrics["cold_start"]["ratios"]
    assert results["models"]["model"]["info"] == {"loss": [2.0, 1.0]}
    json.dumps(metrics)  # the manifest and the XCom take it as is


def test_tuning_on_a_validation_side_without_usable_users_says_so() -> None:
    from recsys.model import baselines

    train, holdout = _run_data()
    split = run_split(train, holdout, pd.Timestamp("2024-01-09", tz="UTC"))
    unusable = Split("s", split.train, split.validation.assign(user_id=500), split.test)  # nobody trained

    with pytest.raises(TrainingError, match=r"no validation user .* cannot be tuned"):
        tune(ModelSpec(baselines.ease, [{"l2": 1.0}, {"l2": 10.0}]), unusable, np.arange(100, 121), 5)
