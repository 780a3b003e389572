"""The optional BCE ranking loss on labelled impressions: labels, data, loss values, training, off by default."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from recsys.config import ModelSettings
from recsys.errors import TrainingError
from recsys.features.training_set import TrainingData, label_impressions
from recsys.model import data
from recsys.model.fit import train
from recsys.model.two_tower import (
    TwoTowerModel,
    build_item_core,
    build_user_core,
    catalog_softmax_loss,
    keras,
    ranking_bce_loss,
)

CFG = ModelSettings(embedding_dim=8, epochs=6, batch_size=32, learning_rate=0.05, temperature=0.1, seed=3)
TEXT = np.eye(4, 6, dtype=np.float32)


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _value(x: object) -> float:
    return float(keras.ops.convert_to_numpy(x))


# --- labels ---------------------------------------------------------------------------------------------


def test_impression_labels_are_point_in_time_and_same_day() -> None:
    events = pd.DataFrame(
        [
            (1, 10, "click", 1, "2024-01-01 09:00"),  # before the impression: does not label it
            (1, 10, "impression", 0, "2024-01-01 10:00"),
            (1, 11, "impression", 0, "2024-01-01 10:00"),
            (1, 11, "click", 1, "2024-01-01 10:00"),  # at the impression's own time: counts
            (1, 12, "impression", 0, "2024-01-01 23:00"),
            (1, 12, "like", 1, "2024-01-02 00:30"),  # the next day: does not count
            (2, 10, "impression", 0, "2024-01-01 12:00"),
            (2, 10, "rating", 1, "2024-01-01 13:00"),  # rating >= 4 (label 1) later that day
            (2, 11, "impression", 0, "2024-01-01 12:00"),
            (2, 11, "rating", 0, "2024-01-01 12:30"),  # a low rating is no engagement
            (3, 10, "impression", 0, "2024-01-02 08:00"),
            (3, 10, "click", 1, "2024-01-02 09:00"),  # at/after the cutoff: not read
            (3, 11, "impression", 0, "2024-01-02 13:00"),  # at/after the cutoff: not a training impression
        ],
        columns=["user_id", "item_id", "event_type", "is_positive", "event_timestamp"],
    ).assign(event_timestamp=lambda f: pd.to_datetime(f["event_timestamp"], utc=True))
    out = label_impressions(events, _ts("2024-01-02 09:00"))
    assert list(out.columns) == ["user_id", "item_id", "event_timestamp", "label"]
    got = {(u, i, t.strftime("%d %H:%M")): y for u, i, t, y in out.itertuples(index=False)}
    assert got == {
        (1, 10, "01 10:00"): 0,
        (1, 11, "01 10:00"): 1,
        (1, 12, "01 23:00"): 0,
        (2, 10, "01 12:00"): 1,
        (2, 11, "01 12:00"): 0,
        (3, 10, "02 08:00"): 0,
    }
    assert out["event_timestamp"].is_monotonic_increasing
    assert label_impressions(events[events["event_type"] != "impression"], _ts("2024-01-03")).empty
    only_shown = label_impressions(events[events["event_type"] == "impression"], _ts("2024-01-03"))
    assert len(only_shown) == 7 and only_shown["label"].eq(0).all()


def test_each_impression_needs_its_own_later_engagement() -> None:
    """Two impressions of one item, one click between them: only the first is labelled 1."""
    events = pd.DataFrame(
        {
            "user_id": [1, 1, 1],
            "item_id": [10, 10, 10],
            "event_type": ["impression", "click", "impression"],
            "is_positive": [False, True, False],
            "event_timestamp": pd.to_datetime(["2024-01-01 10:00", "2024-01-01 10:01", "2024-01-01 11:00"], utc=True),
        }
    )
    assert label_impressions(events, _ts("2024-01-02"))["label"].tolist() == [1, 0]


# --- loss values ----------------------------------------------------------------------------------------


def test_ranking_bce_hand_values() -> None:
    logits, labels = np.float32([0.0, 2.0, -1.0]), np.float32([1.0, 0.0, 0.0])
    expected = (math.log(2) + math.log(1 + math.exp(2)) + math.log(1 + math.exp(-1))) / 3
    assert _value(ranking_bce_loss(logits, labels)) == pytest.approx(expected, rel=1e-6)
    assert _value(ranking_bce_loss(np.float32([50.0, -50.0]), np.float32([1, 0]))) == pytest.approx(0.0, abs=1e-6)
    assert _value(ranking_bce_loss(np.float32([-100.0]), np.float32([1.0]))) == pytest.approx(100.0, rel=1e-6)


def _model(weight: float, bias: float = 0.0) -> TwoTowerModel:
    keras.utils.set_random_seed(3)
    user_core = build_user_core(3, 0, 4, history_text=TEXT, history_length=2)
    item_core = build_item_core(6, 0, 4)
    catalog = {"item_embedding": TEXT, "item_features": np.zeros((4, 0), np.float32)}
    return TwoTowerModel(user_core, item_core, catalog, temperature=0.5, ranking_weight=weight, ranking_bias=bias)


def _batch() -> dict[str, np.ndarray]:
    users = {
        "user_index": np.array([1, 2], np.int32),
        "user_features": np.zeros((2, 0), np.float32),
        "recent_rows": np.array([[1, 0], [2, 3]], np.int32),
    }
    return {
        **users,
        "item_row": np.array([2, 0], np.int32),
        **{f"rank_{k}": v[::-1].copy() for k, v in users.items()},
        "rank_item_row": np.array([1, 3], np.int32),
        "rank_label": np.float32([1.0, 0.0]),
    }


def test_ranking_logits_and_total_loss_by_hand() -> None:
    model, batch = _model(weight=0.5, bias=-1.0), _batch()
    users = keras.ops.convert_to_numpy(
        model.user_core({k: batch[f"rank_{k}"] for k in ("user_index", "user_features", "recent_rows")})
    )
    items = keras.ops.convert_to_numpy(model.item_vectors(batch["rank_item_row"]))
    expected_logits = (users * items).sum(axis=1) / 0.5 - 1.0
    logits = keras.ops.convert_to_numpy(model.ranking_logits(batch))
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-6)
    y_pred = model(batch)
    softmax = _value(catalog_softmax_loss(y_pred, batch["item_row"]))
    labels = batch["rank_label"]
    bce = float(np.mean(np.log1p(np.exp(-logits)) * labels + np.log1p(np.exp(logits)) * (1 - labels)))
    assert _value(model.compute_loss(x=batch, y_pred=y_pred)) == pytest.approx(softmax + 0.5 * bce, rel=1e-5)
    # Without a ranking weight the same batch gives the softmax loss alone and the model has no ranking bias.
    plain = _model(weight=0.0)
    assert _value(plain.compute_loss(x=batch, y_pred=plain(batch))) == pytest.approx(softmax, rel=1e-5)
    assert not any("ranking" in w.path for w in plain.weights)
    with pytest.raises(ValueError, match="ranking_weight"):
        _model(weight=-1.0)


# --- data -----------------------------------------------------------------------------------------------


def test_recent_positives_before_each_impression() -> None:
    positives = pd.DataFrame(
        {
            "user_id": [1, 1, 1],
            "item_id": [10, 20, 30],
            "event_timestamp": pd.to_datetime(["2024-01-01"] * 2 + ["2024-01-03"], utc=True),
        }
    )
    queries = pd.DataFrame(
        {"user_id": [1, 1, 2], "event_timestamp": pd.to_datetime(["2024-01-01", "2024-01-04", "2024-01-04"], utc=True)}
    )
    np.testing.assert_array_equal(data.recent_positives_before(positives, queries, 2), [[-1, -1], [30, 20], [-1, -1]])


def test_ranking_batches_match_the_positive_batches() -> None:
    arrays = {"user_index": np.arange(10, dtype=np.int32), "item_row": np.arange(10, dtype=np.int32)}
    ranking = {"rank_user_index": np.arange(3, dtype=np.int32), "rank_label": np.float32([0, 1, 0])}
    batches = list(data.training_dataset(arrays, 4, seed=0, ranking=ranking))
    assert len(batches) == 2  # an epoch is one pass over the positives (drop_remainder: 10 // 4)
    assert all(b["rank_label"].shape == (4,) and b["user_index"].shape == (4,) for b in batches)
    single = list(data.training_dataset({"item_row": np.arange(3, dtype=np.int32)}, 8, seed=0, ranking=ranking))
    assert len(single) == 1 and single[0]["rank_label"].shape == (3,)  # one short batch: the same 3 rows


# --- training -------------------------------------------------------------------------------------------


def planted_items(text_dim: int = 8) -> pd.DataFrame:
    """Items 100-109 are topic A, 110-119 topic B (as in test_train)."""
    rng = np.random.default_rng(0)
    centres = np.eye(text_dim, dtype=np.float32)[:2]
    vectors = [centres[i // 10] + 0.3 * rng.normal(size=text_dim).astype(np.float32) for i in range(20)]
    return pd.DataFrame(
        {"item_id": np.arange(100, 120, dtype=np.int64), "embedding": [v / np.linalg.norm(v) for v in vectors]}
    )


def planted_positives() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = [
        (user, (100 if user < 10 else 110) + int(item), _ts("2024-01-01") + pd.Timedelta(hours=n))
        for user in range(20)
        for n, item in enumerate(rng.choice(10, size=4, replace=False))
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp"]).assign(user_clicks_28d=1.0)


def planted_impressions() -> pd.DataFrame:
    """Each user sees 12 random items on day 2; label 1 exactly for items of the user's topic."""
    rng = np.random.default_rng(2)
    rows = [
        (user, 100 + int(idx), _ts("2024-01-02") + pd.Timedelta(minutes=n), int((idx < 10) == (user < 10)))
        for user in range(20)
        for n, idx in enumerate(rng.choice(20, size=12, replace=False))
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp", "label"]).assign(user_clicks_28d=1.0)


def test_training_with_the_ranking_loss_lowers_it() -> None:
    cfg = CFG.model_copy(update={"ranking_loss_weight": 1.0, "id_dropout": 0.0})
    model = train(
        planted_positives(), planted_items(), ["user_clicks_28d"], [], cfg, impressions_df=planted_impressions()
    )
    assert len(model.ranking_history) == CFG.epochs and np.all(np.isfinite(model.history))
    assert model.ranking_history[-1] < 0.8 * model.ranking_history[0]
    assert model.options["ranking_loss_weight"] == 1.0
    # The artifact's form does not change: the same tower inputs and item matrix shape.
    assert set(model.user_tower.input) == {"user_id", "user_features", "recent_item_ids"}
    assert model.item_embeddings.shape == (20, CFG.embedding_dim)


def test_ranking_loss_needs_impressions_and_is_off_by_default() -> None:
    assert ModelSettings().ranking_loss_weight == 0.0
    with pytest.raises(ValidationError):
        ModelSettings(ranking_loss_weight=-0.1)
    on = CFG.model_copy(update={"ranking_loss_weight": 0.5})
    for impressions in (None, planted_impressions().iloc[:0]):
        with pytest.raises(TrainingError, match="no labelled impressions"):
            train(planted_positives(), planted_items(), ["user_clicks_28d"], [], on, impressions_df=impressions)
    with pytest.raises(TrainingError, match="ranking_loss_weight"):
        train(planted_positives(), planted_items(), [], [], CFG.model_copy(update={"ranking_loss_weight": -1.0}))
    # Off: impressions passed or not, the same seeded run.
    cfg = CFG.model_copy(update={"epochs": 2})
    runs = [
        train(planted_positives(), planted_items(), ["user_clicks_28d"], [], cfg, impressions_df=imps)
        for imps in (None, planted_impressions())
    ]
    assert runs[0].history == runs[1].history and runs[1].ranking_history == []
    np.testing.assert_array_equal(runs[0].item_embeddings, runs[1].item_embeddings)


def test_training_set_keeps_impressions_across_save_and_load(tmp_path: Path) -> None:
    frame = pd.DataFrame({"user_id": [1], "item_id": [2], "event_timestamp": [_ts("2024-01-01")]})
    items = pd.DataFrame({"item_id": [2], "embedding": [[1.0, 0.0]]})
    impressions = planted_impressions().head(3).assign(recent_item_ids=[[101], [], [102, 103]])
    base = TrainingData(frame, frame, pd.DataFrame({"x": [1.0]}, index=[1]), items, _ts("2024-01-02"), [], [])
    assert base.impressions.empty  # ranking loss off: an empty frame
    base.save(tmp_path / "off")
    assert not (tmp_path / "off" / "impressions.parquet").exists()
    assert TrainingData.load(tmp_path / "off").impressions.empty
    TrainingData(**{**base.__dict__, "impressions": impressions}).save(tmp_path / "on")
    loaded = TrainingData.load(tmp_path / "on").impressions
    assert loaded["label"].tolist() == impressions["label"].tolist()
    assert [list(v) for v in loaded["recent_item_ids"]] == [[101], [], [102, 103]]


# --- training set ---------------------------------------------------------------------------------------


def test_build_fetches_impression_features_once_and_only_when_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Feast and the marts replaced by stubs: the wiring of ``training_set.build`` with the option on and off."""
    from recsys.config import Settings
    from recsys.features import training_set

    events = pd.DataFrame(
        [
            (1, 10, "impression", 0, "2024-01-01 10:00"),
            (1, 11, "impression", 0, "2024-01-01 10:00"),  # the same feed: one Feast entity row for both
            (1, 11, "click", 1, "2024-01-01 10:01"),
            (2, 10, "impression", 0, "2024-01-01 12:00"),
            (2, 10, "click", 1, "2024-01-02 12:00"),  # the holdout day: a test positive, no label
        ],
        columns=["user_id", "item_id", "event_type", "is_positive", "event_timestamp"],
    ).assign(event_timestamp=lambda f: pd.to_datetime(f["event_timestamp"], utc=True))
    reads: list[bool] = []
    calls: list[pd.DataFrame] = []

    def fake_events(settings: Settings, with_types: bool) -> pd.DataFrame:
        reads.append(with_types)
        return events if with_types else events.drop(columns="event_type")

    def fake_user_features(settings: Settings, entities: pd.DataFrame) -> pd.DataFrame:
        calls.append(entities)
        recent = [[int(u) * 100] for u in entities["user_id"]]
        return entities.assign(**dict.fromkeys(training_set.USER_FEATURES, 1.0), recent_item_ids=recent)

    monkeypatch.setattr(training_set, "_events", fake_events)
    monkeypatch.setattr(training_set, "_user_features", fake_user_features)
    monkeypatch.setattr(
        training_set, "_items", lambda *a: pd.DataFrame({"item_id": [10, 11], "embedding": [[1.0]] * 2})
    )
    end = _ts("2024-01-03").to_pydatetime()

    off = training_set.build(Settings(home=tmp_path), end)
    assert reads == [False] and off.impressions.empty and len(calls) == 2  # train rows + test users only

    reads.clear()
    calls.clear()
    on = training_set.build(Settings(home=tmp_path, model={"ranking_loss_weight": 0.5}), end)
    assert reads == [True] and len(calls) == 3  # + one call for the impressions
    assert calls[-1][["user_id", "event_timestamp"]].value_counts().max() == 1 and len(calls[-1]) == 2
    got = on.impressions
    assert got[["user_id", "item_id", "label"]].values.tolist() == [[1, 10, 0], [1, 11, 1], [2, 10, 0]]
    assert got["recent_item_ids"].tolist() == [[100], [100], [200]]
    assert set(training_set.USER_FEATURES) <= set(got.columns)
