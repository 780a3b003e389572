"""The accelerator check's data and metric (the check itself runs on a GPU machine: bench/gpu_check.py)."""

from __future__ import annotations

import numpy as np

from bench.gpu_check import Sizes, _oracle_recall, planted_data, recall_at_k, train_run


def test_recall_counts_a_target_in_the_top_k_of_unseen_items() -> None:
    scores = np.array([[0.9, 0.8, 0.1, 0.0], [0.9, 0.8, 0.1, 0.0]])
    # user 0 saw column 0, so its top 2 is {1, 2}; user 1 saw nothing, so its top 2 is {0, 1}
    assert recall_at_k(scores, [np.array([0]), np.array([], int)], np.array([2, 2]), k=2) == 0.5


def test_planted_data_holds_out_each_users_last_unseen_positive() -> None:
    planted = planted_data(n_users=30, n_items=200, per_user=10, seed=1)
    assert planted.heldout["user_id"].is_unique and len(planted.heldout) == 30
    last_train = planted.train.groupby("user_id")["event_timestamp"].max()
    held = planted.heldout.set_index("user_id")["event_timestamp"]
    assert (held > last_train.reindex(held.index)).all()
    pairs = set(zip(planted.train["user_id"], planted.train["item_id"], strict=True))
    assert not {(u, i) for u, i in zip(planted.heldout["user_id"], planted.heldout["item_id"], strict=True)} & pairs
    # 90% of positives are on the user's two liked topics, and knowing them beats chance by far
    topic = planted.items.set_index("item_id")["topic"]
    users, items = planted.train["user_id"], planted.train["item_id"]
    on_topic = [topic[i] in planted.liked[u - 1] for u, i in zip(users, items, strict=True)]
    assert np.mean(on_topic) > 0.8
    assert _oracle_recall(planted) > 5 * 10 / 200


def test_a_training_run_goes_through_the_public_build_seam() -> None:
    """``train_run`` on TensorFlow with frozen text vectors (no checkpoint is loaded), as the GPU check runs it."""
    planted = planted_data(n_users=24, n_items=64, per_user=8, seed=2)
    vectors = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    counts = planted.train["item_id"].value_counts().reindex(planted.items["item_id"]).fillna(0).to_numpy()
    items_df = planted.items.assign(embedding=list(vectors), item_log_positives=np.log1p(counts))
    sizes = Sizes(users=24, items=64, per_user=8, epochs=2, batch_size=16, num_sampled=8, encode_texts=0)
    flags = {"finetune_bert": "off", "mixed_precision": "off", "jit_compile": "off"}
    result = train_run("frozen", planted, items_df, sizes, "not-loaded", **flags)
    assert (result["run"], result["policy"], result["loss"], result["jit_compile"]) == (
        "frozen",
        "float32",
        "mixed",
        "off",
    )
    assert result["finetuned_bert_layers"] == 0 and "top_bert_layer_moved" not in result
    assert result["examples"] == len(planted.train) and len(result["loss_per_epoch"]) == 2
    assert result["finite"] and 0.0 <= result["recall@10"] <= 1.0
