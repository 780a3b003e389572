"""Do the users table's profile fields help a new user? (`make bench BENCH=cold_users`)

The cold-user path is what a user the model has never seen gets: today the popularity fallback. The users table
offers a profile (country, age band, account age). This bench measures whether ranking by popularity *within
the user's profile segment* (shrunk towards global popularity) beats global popularity for held-out new users,
on the data the project runs on:

- the project's simulator with its default settings (what `make demo` and the tests use), three seeds;
- the same simulator with a planted country → topic signal (``country_topic_share``), as a positive control
  that shows the measurement can see a gain when the data holds one.

MovieLens (ml-latest-small, the real data on this machine) has no user profiles at all, so it cannot be
measured. Cold users: a seeded 30% of users, absent from the training data; their positives in the last
two days are the targets. Positives are what the marts label positive (click, like, purchase, rating >= 4).
Metric: NDCG@10 and recall@10 per user, paired 95% bootstrap intervals of the ratio to global popularity.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("bench.cold_users")

K = 10
SEEDS = (1, 2, 3)
COLD_SHARE = 0.3
TEST_DAYS = 2
SHRINKAGE = 20.0  # pseudo-positives of global popularity mixed into each segment's counts
SEGMENTS = {"country": ["country"], "age_band": ["age_band"], "country_x_age_band": ["country", "age_band"]}


def _positives(site: Any) -> pd.DataFrame:
    events = pd.DataFrame(site.events)
    rating = (events["event_type"] == "rating") & (events["value"] >= 4)
    positive = events["event_type"].isin(["click", "like", "purchase"]) | rating
    return events.loc[positive, ["user_id", "item_id", "occurred_at"]].reset_index(drop=True)


def _popularity(positives: pd.DataFrame, items: np.ndarray) -> np.ndarray:
    counts = positives["item_id"].value_counts().reindex(items).fillna(0.0).to_numpy()
    return counts / max(counts.sum(), 1.0)


def _segment_scores(train: pd.DataFrame, users: pd.DataFrame, keys: list[str], items: np.ndarray) -> dict:
    """``{segment: item scores}``: the segment's positive counts plus SHRINKAGE x global popularity."""
    global_share = _popularity(train, items)
    joined = train.merge(users, on="user_id")
    scores = {}
    for segment, rows in joined.groupby(keys):
        counts = rows["item_id"].value_counts().reindex(items).fillna(0.0).to_numpy()
        scores[segment if isinstance(segment, tuple) else (segment,)] = counts + SHRINKAGE * global_share
    return scores


def _ndcg_recall(scores: np.ndarray, items: np.ndarray, relevant: set[int]) -> tuple[float, float]:
    from recsys.model.evaluate import rank_metrics

    order = np.lexsort((items, -scores))[:K]  # ties: smaller item id first, as the popularity fallback
    recall, ndcg = rank_metrics(items[order], relevant, K)
    return ndcg, recall


def _one_site(cfg: Any) -> dict[str, Any]:
    from recsys.sources.simulator import simulate

    site = simulate(cfg)
    users = pd.DataFrame(site.users)[["user_id", "country", "age_band", "created_at"]]
    positives = _positives(site)
    cutoff = pd.Timestamp(cfg.start) + pd.Timedelta(days=cfg.days - TEST_DAYS)
    rng = np.random.default_rng(cfg.seed)
    cold = set(rng.choice(users["user_id"], size=int(COLD_SHARE * len(users)), replace=False).tolist())
    train = positives[~positives["user_id"].isin(cold) & (positives["occurred_at"] < cutoff)]
    test = positives[positives["user_id"].isin(cold) & (positives["occurred_at"] >= cutoff)]
    items = np.array(sorted(item["item_id"] for item in site.items), dtype=np.int64)
    global_scores = _popularity(train, items)
    by_segment = {name: _segment_scores(train, users, keys, items) for name, keys in SEGMENTS.items()}
    profile = users.set_index("user_id")
    rows = []
    for user, targets in test.groupby("user_id")["item_id"]:
        relevant = set(targets.tolist())
        row = {"global": _ndcg_recall(global_scores, items, relevant)}
        for name, keys in SEGMENTS.items():
            segment = tuple(profile.loc[user, key] for key in keys)
            row[name] = _ndcg_recall(by_segment[name].get(segment, global_scores), items, relevant)
        rows.append(row)
    account_age_h = (users["created_at"] - pd.Timestamp(cfg.start)).dt.total_seconds() / 3600
    return {
        "rows": rows,
        "cold_users": len(rows),
        "train_positives": len(train),
        "account_age_hours_range": [round(float(account_age_h.min()), 2), round(float(account_age_h.max()), 2)],
    }


def _summary(rows: list[dict[str, tuple[float, float]]]) -> dict[str, Any]:
    from recsys.model.protocol import bootstrap_indices, interval, ratio_interval

    resamples = bootstrap_indices(len(rows), seed=0)
    metric = {name: np.array([[r[name][0], r[name][1]] for r in rows]) for name in rows[0]}
    out: dict[str, Any] = {}
    for name, values in metric.items():
        out[name] = {"ndcg@10": interval(values[:, 0], resamples), "recall@10": interval(values[:, 1], resamples)}
        if name != "global":
            out[name]["ndcg@10_ratio_to_global"] = ratio_interval(values[:, 0], metric["global"][:, 0], resamples)
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Segment popularity against global popularity for new users, default data and the positive control."""
    from recsys.sources.simulator import SimulationConfig

    base = SimulationConfig(n_users=600 if quick else 1500, days=8)
    variants = {"default_simulator": 0.0, "planted_country_signal_0.8": 0.8}
    results: dict[str, Any] = {"k": K, "seeds": list(SEEDS), "cold_share": COLD_SHARE, "shrinkage": SHRINKAGE}
    for variant, share in variants.items():
        rows: list[dict[str, tuple[float, float]]] = []
        facts = []
        for seed in SEEDS[:1] if quick else SEEDS:
            one = _one_site(replace(base, seed=seed, country_topic_share=share))
            rows += one["rows"]
            facts.append({k: v for k, v in one.items() if k != "rows"} | {"seed": seed})
            log.info("%s seed %d: %d cold users", variant, seed, one["cold_users"])
        results[variant] = {"sites": facts, "cold_users": len(rows), "metrics": _summary(rows)}
    return results


if __name__ == "__main__":
    import json
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
