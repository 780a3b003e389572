"""The promotion gate: the first model is promoted, a deliberately worse one is refused with the reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.config import ModelSettings, Settings
from recsys.errors import RegistryError
from recsys.features.training_set import ITEM_FEATURES, USER_FEATURES, TrainingData
from recsys.model.evaluate import popular_item_ids
from recsys.registry.gate import decide, decisions, evaluate_and_decide, production_tag

pytestmark = pytest.mark.slow
N_USERS, N_ITEMS, TOPICS = 30, 40, 4
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def planted() -> TrainingData:
    """Users like one topic; item embeddings encode the topic. Train on 6 liked items, test on 2 others."""
    rng = np.random.default_rng(0)
    topic = np.arange(N_ITEMS) % TOPICS
    emb = np.eye(TOPICS)[topic] + 0.05 * rng.standard_normal((N_ITEMS, TOPICS))
    items = pd.DataFrame({"item_id": np.arange(1, N_ITEMS + 1), "embedding": list(emb.astype("float32"))})
    items[ITEM_FEATURES] = 0.0
    train, test = [], []
    for user in range(1, N_USERS + 1):
        liked = rng.permutation(np.flatnonzero(topic == user % TOPICS) + 1)
        train += [(user, int(i), T0 + timedelta(hours=n)) for n, i in enumerate(liked[:6])]
        test += [(user, int(i), T0 + timedelta(days=2)) for i in liked[6:8]]
    cols = ["user_id", "item_id", "event_timestamp"]
    train_df = pd.DataFrame(train, columns=cols)
    train_df[USER_FEATURES] = 0.0
    test_feats = pd.DataFrame(0.0, index=pd.Index(range(1, N_USERS + 1), name="user_id"), columns=USER_FEATURES)
    return TrainingData(train_df, pd.DataFrame(test, columns=cols), test_feats, items, T0 + timedelta(days=2),
                        list(USER_FEATURES), list(ITEM_FEATURES))  # fmt: skip


def register(settings: Settings, data: TrainingData, train_df: pd.DataFrame, out: Path) -> str:
    from recsys.model.export import export_artifact
    from recsys.model.fit import train
    from recsys.registry import save_model

    cfg = ModelSettings(epochs=30, batch_size=32, embedding_dim=8, learning_rate=0.02)
    model = train(train_df, data.items, data.user_feature_names, data.item_feature_names, cfg)
    meta = {"data_interval_start": "2026-11-01", "data_interval_end": "2026-11-03", "feature_service": "t",
            "dataset_fingerprint": "x", "code_version": "test", "bert_checkpoint": "none"}  # fmt: skip
    export_artifact(model, out, popular_item_ids(data.train[["user_id", "item_id"]]), meta)
    return save_model(settings, out, {})


def test_decide_needs_more_than_the_margin() -> None:
    assert decide("c", 0.30, None, None, "ndcg@10", 0.01).promoted
    assert decide("c", 0.30, "p", 0.25, "ndcg@10", 0.01).promoted
    tie = decide("c", 0.30, "p", 0.30, "ndcg@10", 0.0)
    assert not tie.promoted and "does not beat" in tie.reason
    assert not decide("c", 0.30, "p", 0.295, "ndcg@10", 0.01).promoted


def test_gate_refuses_a_worse_model(settings: Settings, tmp_path: Path) -> None:
    data = planted()
    good = register(settings, data, data.train, tmp_path / "good")
    first = evaluate_and_decide(settings, good, data)
    assert first.promoted and production_tag(settings) == good

    shuffled = data.train.assign(item_id=np.random.default_rng(1).permutation(data.train["item_id"].to_numpy()))
    worse = register(settings, data, shuffled, tmp_path / "worse")  # trained on scrambled positives
    second = evaluate_and_decide(settings, worse, data)

    assert not second.promoted
    assert second.candidate_value < second.production_value
    assert production_tag(settings) == good  # production unchanged
    recorded = decisions(settings)
    assert [d["promoted"] for d in recorded] == [True, False]
    assert "does not beat" in recorded[-1]["reason"]
    # the decisions are also stored on the models themselves (decisions.jsonl stays the history)
    from recsys.registry.store import get_model

    assert (get_model(settings, good).promotion, get_model(settings, worse).promotion) == ("promoted", "refused")
    assert get_model(settings, worse).metadata["promotion"]["reason"] == recorded[-1]["reason"]
    with pytest.raises(RegistryError, match="already the production model"):
        evaluate_and_decide(settings, good, data)
