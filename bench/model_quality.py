"""Model quality: the two-tower model against tuned baselines on MovieLens and the simulator.

    uv run python -m bench.model_quality            # JSON on stdout, HTML report under bench/results/

Works from the CSVs / the simulator in memory (no Airflow, dbt or Feast), through the same code the
pipeline uses: ``recsys.model.encoder.encode_items`` (packaged MiniLM; embeddings cached under
``$RECSYS_BENCH_CACHE`` or ``/tmp/recsys-bench-cache``), ``recsys.model.fit.train`` and
``recsys.model.protocol.run_protocol`` (docs/evaluation.md). MovieLens is read from
``/work/shared/data/movielens-small`` (``$RECSYS_MOVIELENS_DIR``), never copied.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

MOVIELENS_DIR = Path(os.environ.get("RECSYS_MOVIELENS_DIR", "/work/shared/data/movielens-small"))
CACHE = Path(os.environ.get("RECSYS_BENCH_CACHE", "/tmp/recsys-bench-cache"))
RESULTS = Path(__file__).parent / "results"
MOVIELENS_CONFIG = Path(__file__).parents[1] / "training" / "configs" / "movielens.yaml"
K = 10
TOP_TAGS = 5
# The simulator has ~2,500 training positives (MovieLens ~34,000): smaller towers, text-only history,
# fewer epochs (docs/evaluation.md); the protocol still picks among them on validation only.
SIMULATOR_GRID = [
    {
        "embedding_dim": 64,
        "history_length": 20,
        "history_id_dim": 0,
        "epochs": e,
        "item_id_embedding": ids,
        "ema_momentum": 0.0,  # ~5 steps an epoch: too few for a weight average
        "popularity_prior": 0.0,  # the MovieLens weight was chosen on MovieLens; the simulator plants topics
    }
    for e in (5, 10)
    for ids in (True, False)
]
TARGETS = {"vs_popularity": 1.75, "cold_vs_random": 5.0}

log = logging.getLogger("bench.model_quality")


# --- data --------------------------------------------------------------------------------------------


def movielens(folder: Path = MOVIELENS_DIR) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(ratings: user_id, item_id, rating, event_timestamp; items: item_id, text, genres, content_hash)."""
    if not (folder / "ratings.csv").is_file():
        raise FileNotFoundError(f"{folder}/ratings.csv not found: set RECSYS_MOVIELENS_DIR to MovieLens small.")
    ratings = pd.read_csv(folder / "ratings.csv").rename(columns={"userId": "user_id", "movieId": "item_id"})
    ratings["event_timestamp"] = pd.to_datetime(ratings.pop("timestamp"), unit="s", utc=True)
    movies = pd.read_csv(folder / "movies.csv").rename(columns={"movieId": "item_id"})
    tags = pd.read_csv(folder / "tags.csv").rename(columns={"movieId": "item_id"})
    tags["tag"] = tags["tag"].astype(str).str.strip().str.lower()
    counts = tags.groupby(["item_id", "tag"]).size().reset_index(name="n")
    counts = counts.sort_values(["item_id", "n", "tag"], ascending=[True, False, True])
    top = counts.groupby("item_id").head(TOP_TAGS).groupby("item_id")["tag"].agg(", ".join)
    genres = movies["genres"].replace("(no genres listed)", "").str.split("|")
    movies["genres"] = [[g for g in gs if g] for gs in genres]
    movies["tags"] = movies["item_id"].map(top).fillna("")
    movies["text"] = [
        f"{t}. {', '.join(g)}." + (f" Tags: {tg}." if tg else "")
        for t, g, tg in zip(movies["title"], movies["genres"], movies["tags"], strict=True)
    ]
    return ratings, _with_hash(movies[["item_id", "text", "genres"]])


def movielens_primary() -> tuple[pd.DataFrame, Any]:
    """MovieLens items with their MiniLM embeddings, and the primary (per-user temporal) split of its positives."""
    from recsys.model.protocol import per_user_temporal_split, positives_from_ratings

    ratings, items = movielens()
    return embed(items, "movielens"), per_user_temporal_split(positives_from_ratings(ratings, 4.0))


def _with_hash(items: pd.DataFrame) -> pd.DataFrame:
    items = items.sort_values("item_id", kind="stable").reset_index(drop=True)
    items["content_hash"] = [hashlib.md5(t.encode()).hexdigest() for t in items["text"]]
    items["event_timestamp"] = pd.Timestamp("2020-01-01", tz="UTC")
    return items


def embed(items: pd.DataFrame, name: str) -> pd.DataFrame:
    """``items`` + ``embedding`` from the packaged MiniLM via ``encode_items`` (cached per dataset ``name``)."""
    from recsys.config import Settings
    from recsys.model.encoder import encode_items

    result = encode_items(Settings(home=CACHE / name), items)
    latest = result.table.sort_values("event_timestamp").drop_duplicates("item_id", keep="last")
    vectors = latest.set_index("item_id")["embedding"]
    return items.assign(embedding=vectors.reindex(items["item_id"]).to_numpy())


def simulator_site() -> Any:
    """The default simulated site (planted user topics)."""
    from recsys.sources.simulator import SimulationConfig, simulate

    return simulate(SimulationConfig(days=14, n_users=400))


def simulator_data(site: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(click positives, items with text/genres) of a simulated site."""
    from recsys.model.protocol import positives_from_events

    events = pd.DataFrame(site.events)
    items = pd.DataFrame(site.items)
    items["text"] = [
        f"{t}. {c}. {', '.join(tg)}. {b}"
        for t, c, tg, b in zip(items["title"], items["category"], items["tags"], items["body"], strict=True)
    ]
    items["genres"] = [[c] for c in items["category"]]
    return positives_from_events(events), _with_hash(items[["item_id", "text", "genres"]])


# --- models ------------------------------------------------------------------------------------------


def model_settings(**overrides: Any) -> Any:
    """The two-tower settings of ``training/configs/movielens.yaml`` (chosen on validation, docs/evaluation.md)."""
    import yaml

    from recsys.config import ModelSettings

    return ModelSettings(**{**yaml.safe_load(MOVIELENS_CONFIG.read_text()), **overrides})


def specs(items: pd.DataFrame, two_tower_grid: list[dict[str, Any]], quick: bool = False) -> dict[str, Any]:
    """Every model of the comparison with its validation grid."""
    from recsys.model import baselines
    from recsys.model.protocol import ModelSpec, two_tower_fit

    genres = dict(zip(items["item_id"].astype(int), items["genres"], strict=True))
    pick = (lambda g: g[:1]) if quick else (lambda g: g)
    return {
        "popularity": ModelSpec(baselines.popularity),
        "recency_popularity": ModelSpec(
            baselines.recency_popularity, pick([{"half_life_days": d} for d in (730, 180, 3650, 30)])
        ),
        "item_knn": ModelSpec(baselines.item_knn, pick([{"neighbours": n} for n in (100, 20, 400)])),
        "als": ModelSpec(
            baselines.als,
            pick(
                [{"factors": f, "regularization": r, "alpha": a} for a in (10, 2) for f in (64, 128) for r in (0.05,)]
            ),
        ),
        "ease": ModelSpec(baselines.ease, pick([{"l2": v} for v in (300.0, 1000.0, 100.0, 3000.0)])),
        "two_tower": ModelSpec(
            two_tower_fit(items[["item_id", "embedding", "text"]], model_settings()), two_tower_grid, baseline=False
        ),
        "random": ModelSpec(baselines.random_scores, cold_only=True),
        "genre_popularity": ModelSpec(
            functools.partial(baselines.genre_popularity, item_genres=genres), cold_only=True
        ),
        "user_genre_popularity": ModelSpec(
            functools.partial(baselines.user_genre_popularity, item_genres=genres), cold_only=True
        ),
    }


def oracle(site: Any, item_ids: np.ndarray, positives: pd.DataFrame) -> Any:
    """Knows the planted topics: items on the user's topics first, by fit popularity within them."""
    topic = np.array([site.item_topic[int(i)] for i in item_ids])
    pop = positives["item_id"].value_counts().reindex(item_ids).fillna(0).to_numpy()
    tiebreak = pop / (pop.max() + 1.0)

    def score(user_ids: np.ndarray) -> np.ndarray:
        liked = np.array([np.isin(topic, site.user_topics.get(int(u), [])) for u in user_ids], dtype=float)
        return liked + tiebreak

    return score


# --- runs --------------------------------------------------------------------------------------------


def _targets(result: dict[str, Any]) -> dict[str, Any]:
    r, c = result["ratios"], result["cold_start"]["ratios"]
    best = r["best_baseline"]
    vs_pop = r[f"two_tower/popularity ndcg@{K}"]
    vs_best = r.get(f"two_tower/{best} ndcg@{K}", {"mean": float("nan")})
    cold_random = c.get(f"two_tower/random ndcg@{K}", {"mean": float("nan")})
    cold_genre = c.get(f"two_tower/genre_popularity ndcg@{K}", {"mean": float("nan")})
    cold_user_genre = c.get(f"two_tower/user_genre_popularity ndcg@{K}", {"mean": float("nan")})
    return {
        "ndcg_vs_popularity": vs_pop,
        "ndcg_vs_popularity_met": vs_pop["mean"] >= TARGETS["vs_popularity"],
        "best_baseline": best,
        "ndcg_vs_best_baseline": vs_best,
        "ndcg_vs_best_baseline_met": vs_best["mean"] >= 1.0,
        "cold_ndcg_vs_random": cold_random,
        "cold_vs_random_met": cold_random["mean"] >= TARGETS["cold_vs_random"],
        "cold_ndcg_vs_genre_popularity": cold_genre,
        "cold_ndcg_vs_user_genre_popularity": cold_user_genre,
        "cold_vs_genre_met": cold_genre["mean"] > 1.0,
    }


def run_movielens(n_boot: int = 1000, secondary: bool = True, quick: bool = False) -> dict[str, Any]:
    """Primary (per-user temporal) and secondary (global temporal) MovieLens runs."""
    from recsys.model.protocol import (
        global_temporal_split,
        per_user_temporal_split,
        positives_from_ratings,
        run_protocol,
    )

    ratings, items = movielens()
    t = time.perf_counter()
    items = embed(items, "movielens")
    embed_s = time.perf_counter() - t
    positives = positives_from_ratings(ratings, 4.0)
    item_ids = items["item_id"].to_numpy(np.int64)
    grid = [{"epochs": 15}]  # chosen on validation (docs/evaluation.md); 3 members x ~4 min a fit
    runs = {}
    split = per_user_temporal_split(positives)
    runs["movielens_per_user"] = run_protocol(
        split, item_ids, specs(items, grid[:1] if quick else grid, quick), K, n_boot
    )
    runs["movielens_per_user"]["targets"] = _targets(runs["movielens_per_user"])
    if secondary:
        chosen = runs["movielens_per_user"]["models"]["two_tower"]["params"]
        split2 = global_temporal_split(positives)
        runs["movielens_global"] = run_protocol(split2, item_ids, specs(items, [chosen], quick=True), K, n_boot)
    return {"runs": runs, "embed_seconds": embed_s, "items": len(items), "positives": len(positives)}


def run_simulator(n_boot: int = 1000) -> dict[str, Any]:
    """Simulator: the model against baselines and against the planted-topic oracle."""
    from recsys.model.evaluate import positives_by_user, user_metrics
    from recsys.model.protocol import (
        ModelSpec,
        bootstrap_indices,
        per_user_temporal_split,
        ratio_interval,
        run_protocol,
    )

    site = simulator_site()
    positives, items = simulator_data(site)
    items = embed(items, "simulator")
    item_ids = items["item_id"].to_numpy(np.int64)
    split = per_user_temporal_split(positives)
    kept: dict[str, Any] = {}
    models = specs(items, SIMULATOR_GRID, quick=True)
    models["oracle"] = ModelSpec(lambda pos, ids: oracle(site, ids, pos), baseline=False)
    result = run_protocol(split, item_ids, models, K, n_boot, keep=kept)
    fit_map, test_map = positives_by_user(split.fit), positives_by_user(split.test)
    users = np.array(result["users"], np.int64)
    per = {
        n: user_metrics(kept[n].score, fit_map, test_map, item_ids, K, users=users)
        for n in ("two_tower", "oracle", "popularity")
    }
    resamples = bootstrap_indices(len(users), n_boot, 0)
    topic_precision = {
        n: _topic_precision(site, kept[n].score, fit_map, item_ids, users)
        for n in ("two_tower", "oracle", "popularity")
    }
    result["oracle"] = {
        f"two_tower/oracle recall@{K}": ratio_interval(per["two_tower"].recall, per["oracle"].recall, resamples),
        f"popularity/oracle recall@{K}": ratio_interval(per["popularity"].recall, per["oracle"].recall, resamples),
        f"topic_precision@{K}": topic_precision,
    }
    result["targets"] = _targets(result)
    return {"runs": {"simulator_per_user": result}}


def _topic_precision(site: Any, score_fn: Any, fit_map: Any, item_ids: np.ndarray, users: np.ndarray) -> float:
    """Share of each user's top-k (fit items excluded) on the user's planted topics, averaged."""
    from recsys.scoring import top_k_rows

    scores = np.asarray(score_fn(users))
    col_of = pd.Series(np.arange(len(item_ids)), index=item_ids)
    seen = [col_of.reindex(list(fit_map.get(int(u), ()))).dropna().to_numpy(np.int64) for u in users]
    top = top_k_rows(scores, seen, K)
    on_topic = [
        np.mean([site.item_topic[int(item_ids[c])] in site.user_topics[int(u)] for c in row if c >= 0])
        for u, row in zip(users, top, strict=True)
    ]
    return float(np.mean(on_topic))


def run(n_boot: int = 1000, secondary: bool = True, report: Path | None = None, quick: bool = False) -> dict[str, Any]:
    """Every run; writes the HTML report (default ``bench/results/model_quality.html``); JSON-able dict.

    ``quick``: no validation grids (each model's first grid point, the one chosen on validation during
    development) and no secondary split: for a shared 2-core machine.
    """
    from recsys.model.protocol import write_report

    started = time.perf_counter()
    ml = run_movielens(n_boot, secondary and not quick, quick)
    sim = run_simulator(n_boot)
    runs = {**ml.pop("runs"), **sim["runs"]}
    out = {"runs": runs, **ml, "seconds": time.perf_counter() - started}
    path = write_report(out, report or RESULTS / "model_quality.html")
    return {**_summary(out), "report": str(path)}


def _summary(out: dict[str, Any]) -> dict[str, Any]:
    """The figures worth reading first; the full results stay in the report and ``results``."""
    summary: dict[str, Any] = {"seconds": round(out["seconds"], 1), "embed_seconds": round(out["embed_seconds"], 1)}
    for name, result in out["runs"].items():
        summary[name] = {
            "ndcg@10": {m: e["test"][f"ndcg@{K}"] for m, e in result["models"].items() if "test" in e},
            "cold_ndcg@10": {m: e["cold_start"][f"ndcg@{K}"] for m, e in result["models"].items() if "cold_start" in e},
            "ratios": result["ratios"],
            "cold_ratios": result["cold_start"]["ratios"],
            "targets": result.get("targets"),
            "oracle": result.get("oracle"),
            "two_tower_params": result["models"]["two_tower"]["params"],
        }
    summary["results"] = out
    return summary


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    figures = run(quick="--quick" in sys.argv)
    (RESULTS / "model_quality.json").write_text(json.dumps(figures, indent=2, default=float))
    print(json.dumps({k: v for k, v in figures.items() if k != "results"}, indent=2, default=float))
