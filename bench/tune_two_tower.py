"""Two-tower validation runs on MovieLens: the runs behind docs/evaluation.md's tuning tables.

    uv run python -m bench.tune_two_tower '{}' '{"ema_momentum": 0.0}' '{"ensemble": 1, "seed": 0}'

Each argument is a JSON object of ``ModelSettings`` overrides on top of
``training/configs/movielens.yaml``. Each point is fitted on the primary split's training part and scored
on its validation part (NDCG@10, the protocol's users and exclusions), beside popularity and EASE on the
same users: one JSON line per point on stdout. The test part is never read. Not part of ``make bench``:
a point costs one full training run (about 4 minutes per ensemble member on 2 cores).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

import numpy as np

from bench import model_quality as mq

K = 10
EASE_L2 = 100.0  # EASE's best validation grid point in the bench

log = logging.getLogger("bench.tune_two_tower")


def validation_scores(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Validation NDCG@10 of the two-tower model at each override point, with the references."""
    from recsys.model import baselines
    from recsys.model.evaluate import positives_by_user, user_metrics
    from recsys.model.protocol import two_tower_fit

    items, split = mq.movielens_primary()
    item_ids = items["item_id"].to_numpy(np.int64)
    fit_map, target_map = positives_by_user(split.train), positives_by_user(split.validation)

    def ndcg(score: Any) -> float:
        return round(float(user_metrics(score, fit_map, target_map, item_ids, K).ndcg.mean()), 4)

    references = {
        "popularity": ndcg(baselines.popularity(split.train, item_ids)),
        "ease": ndcg(baselines.ease(split.train, item_ids, l2=EASE_L2)),
    }
    fit = two_tower_fit(items[["item_id", "embedding", "text"]], mq.model_settings())
    rows = []
    for params in points:
        started = time.perf_counter()
        score = fit(split.train, item_ids, **params).score
        row = {"params": params, f"val_ndcg@{K}": ndcg(score), "seconds": round(time.perf_counter() - started, 1)}
        rows.append({**row, **{f"{name}_val_ndcg@{K}": value for name, value in references.items()}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    validation_scores([json.loads(arg) for arg in sys.argv[1:]] or [{}])
