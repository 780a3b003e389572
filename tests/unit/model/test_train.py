"""Training recovers a planted preference; the artifact round-trips; bad training input fails clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from planted import planted_items
from recsys.artifact import ARTIFACT_FILES, load_artifact
from recsys.config import ModelSettings
from recsys.errors import ArtifactError, TrainingError
from recsys.model.data import recent_items_by_user
from recsys.model.ensemble import with_popularity_prior
from recsys.model.export import export_artifact
from recsys.model.fit import train
from recsys.model.inference import latest_user_features, model_scorer, recommend
from recsys.model.trained import TrainedModel
from recsys.scoring import Scorer

CFG = ModelSettings(embedding_dim=8, epochs=25, batch_size=32, learning_rate=0.05, temperature=0.1, seed=3)
METADATA = {
    "metrics": {"model": {"recall@5": 1.0}, "popularity": {"recall@5": 0.5}},
    "data_interval_start": "2024-01-01T00:00:00+00:00",
    "data_interval_end": "2024-01-08T00:00:00+00:00",
    "feature_service": "recommender_v1",
    "dataset_fingerprint": "abc",
    "code_version": "test",
    "bert_checkpoint": "tiny",
}


def planted_interactions() -> pd.DataFrame:
    """Users 0-9 like only topic A (items 100-109), users 10-19 only topic B; 6 positives each."""
    rng = np.random.default_rng(1)
    rows = []
    for user in range(20):
        base = 100 if user < 10 else 110
        for n, item in enumerate(rng.choice(10, size=6, replace=False)):
            rows.append(
                (
                    user,
                    base + int(item),
                    pd.Timestamp("2024-01-01", tz="UTC") + pd.Timedelta(hours=n),
                    float(rng.integers(0, 30)),
                )
            )
    return pd.DataFrame(rows, columns=["user_id", "item_id", "event_timestamp", "user_clicks_28d"])


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    return train(planted_interactions(), planted_items(), ["user_clicks_28d"], ["item_clicks_28d"], CFG)


def _features(user_ids: list[int]) -> np.ndarray:
    return np.full((len(user_ids), 1), 10.0, np.float32)


def _recent(users: list[int]) -> list[list[int]]:
    by_user = recent_items_by_user(planted_interactions(), 10)
    return [by_user.get(u, []) for u in users]


def test_training_recovers_the_planted_topics(trained: TrainedModel) -> None:
    assert trained.history[-1] < trained.history[0]
    users = list(range(20))
    recs = recommend(trained, users, _features(users), k=5, recent_item_ids=_recent(users))
    on_topic = [np.mean((r.item_ids < 110) == (u < 10)) for u, r in zip(users, recs, strict=True)]
    assert np.mean(on_topic) >= 0.9, on_topic


def test_item_matrix_is_unit_norm_and_aligned(trained: TrainedModel) -> None:
    assert trained.item_embeddings.shape == (20, 8) and trained.item_embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(trained.item_embeddings, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(trained.item_ids, np.arange(100, 120))


def test_exclusions_are_respected(trained: TrainedModel) -> None:
    seen = {0: set(range(100, 110))}
    [ranked] = recommend(trained, [0], _features([0]), k=15, exclude=seen)
    assert not set(ranked.item_ids.tolist()) & seen[0]
    assert len(ranked.item_ids) == 10 and np.all(np.diff(ranked.scores) <= 0)


def test_artifact_round_trip_gives_the_same_recommendations(trained: TrainedModel, tmp_path: Path) -> None:
    out = export_artifact(trained, tmp_path / "v1", popular_item_ids=[105, 112, 100], metadata=METADATA)
    assert sorted(p.name for p in out.iterdir()) == sorted(ARTIFACT_FILES)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["user_feature_names"] == ["user_clicks_28d"]
    assert manifest["feature_service"] == "recommender_v1" and manifest["metrics"] == METADATA["metrics"]
    artifact = load_artifact(out)
    assert artifact.popular_item_ids.dtype == np.int64 and artifact.popular_item_ids.tolist() == [105, 112, 100]
    users = [0, 7, 15, 999]  # 999 is unknown: answered through the OOV bucket
    before = recommend(trained, users, _features(users), k=5)
    after = recommend(artifact, users, _features(users), k=5)
    for b, a in zip(before, after, strict=True):
        np.testing.assert_array_equal(b.item_ids, a.item_ids)
        np.testing.assert_allclose(b.scores, a.scores, atol=1e-5)


def test_export_refuses_incomplete_metadata_and_used_dirs(trained: TrainedModel, tmp_path: Path) -> None:
    without_metrics = {k: v for k, v in METADATA.items() if k != "metrics"}  # evaluate adds them later
    assert (export_artifact(trained, tmp_path / "m", [1], without_metrics) / "manifest.json").is_file()
    with pytest.raises(TrainingError, match="dataset_fingerprint"):
        export_artifact(trained, tmp_path / "a", [1], {k: v for k, v in METADATA.items() if k != "dataset_fingerprint"})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    with pytest.raises(TrainingError, match="not empty"):
        export_artifact(trained, tmp_path / "b", [1], METADATA)
    with pytest.raises(ArtifactError, match=r"user_tower\.keras"):
        load_artifact(tmp_path / "b")


def test_model_scorer_scores_every_item(trained: TrainedModel) -> None:
    feats = latest_user_features(planted_interactions(), ["user_clicks_28d"])
    scores = model_scorer(trained, feats)(np.array([0, 12, 999]))
    assert scores.shape == (3, 20)
    assert scores[0, :10].mean() > scores[0, 10:].mean() and scores[1, 10:].mean() > scores[1, :10].mean()


def test_user_feature_width_is_checked(trained: TrainedModel) -> None:
    with pytest.raises(ValueError, match="expects 1"):
        recommend(trained, [0], np.zeros((1, 3), np.float32), k=3)


def test_unknown_items_and_empty_training_sets_fail_clearly() -> None:
    pairs = planted_interactions()
    with pytest.raises(TrainingError, match="without an embedding"):
        train(pairs.assign(item_id=pairs["item_id"] + 1000), planted_items(), ["user_clicks_28d"], [], CFG)
    with pytest.raises(TrainingError, match="no positive interactions"):
        train(pairs.iloc[:0], planted_items(), ["user_clicks_28d"], [], CFG)
    with pytest.raises(TrainingError, match="lacks columns"):
        train(pairs, planted_items(), ["user_age"], [], CFG)


def test_training_is_seeded() -> None:
    cfg = CFG.model_copy(update={"epochs": 2})
    runs = [train(planted_interactions(), planted_items(), ["user_clicks_28d"], [], cfg) for _ in range(2)]
    assert runs[0].history == runs[1].history
    np.testing.assert_array_equal(runs[0].item_embeddings, runs[1].item_embeddings)


def test_artifact_declares_the_recent_items_input(trained: TrainedModel, tmp_path: Path) -> None:
    out = export_artifact(trained, tmp_path / "v2", popular_item_ids=[100], metadata=METADATA)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["history_length"] == 10 and manifest["recent_item_pad"] == -1
    tower = load_artifact(out).user_tower
    assert tower.input["recent_item_ids"].shape[-1] == 10
    # A topic-B history moves an unknown user towards topic B; padding alone gives a finite unit vector.
    recs = recommend(load_artifact(out), [999, 999], _features([0, 0]), k=5, recent_item_ids=[[111, 112, 113], []])
    assert np.mean(recs[0].item_ids >= 110) > np.mean(recs[1].item_ids >= 110) or np.all(recs[0].item_ids >= 110)
    assert np.all(np.isfinite(recs[1].scores))


def test_options_come_from_settings_then_overrides() -> None:
    assert CFG.loss == "full_catalog"
    cfg = CFG.model_copy(update={"loss": "mixed", "num_sampled": 4})
    assert (cfg.loss, cfg.num_sampled, cfg.history_length) == ("mixed", 4, 10)
    with pytest.raises(TrainingError, match="unknown training options"):
        train(planted_interactions(), planted_items(), [], [], CFG.model_copy(update={"losses": "x"}))
    with pytest.raises(TrainingError, match="loss"):
        train(planted_interactions(), planted_items(), [], [], CFG.model_copy(update={"loss": "softmax"}))


@pytest.mark.parametrize("loss", ["in_batch", "mixed"])
def test_sampled_losses_train_without_history(loss: str) -> None:
    opts = {"loss": loss, "num_sampled": 8, "history_length": 0, "item_id_embedding": False, "id_dropout": 0.0}
    cfg = CFG.model_copy(update={"epochs": 3, **opts})
    model = train(planted_interactions(), planted_items(), ["user_clicks_28d"], [], cfg)
    assert model.history[-1] < model.history[0] and "recent_item_ids" not in model.user_tower.input
    assert model.options["loss"] == loss


@pytest.mark.parametrize("flags", [{"jit_compile": "on"}, {"mixed_precision": "on"}], ids=["xla", "float16"])
def test_gpu_numerics_stay_finite_with_empty_histories(flags: dict[str, str]) -> None:
    # The GPU defaults (XLA, mixed precision) on the CPU: each user's first positive has an empty history,
    # whose pooled vectors are zero; normalising them must not turn the loss into NaN.
    cfg = CFG.model_copy(update={"epochs": 4, "learning_rate": 0.01, "history_length": 4, "history_id_dim": 4, **flags})
    model = train(planted_interactions(), planted_items(), ["user_clicks_28d"], [], cfg)
    assert np.all(np.isfinite(model.history)) and model.history[-1] < model.history[0]
    assert np.all(np.isfinite(model.item_embeddings))
    assert np.all(np.isfinite(Scorer(model).user_vectors([0, 99], np.zeros((2, 1)), [[], [100]])))


@pytest.mark.slow
@pytest.mark.parametrize(("precision", "compute_dtype"), [("off", "float32"), ("on", "float16")])
def test_bert_fine_tuning_path_trains_the_top_layers(tiny_bert_dir: Path, precision: str, compute_dtype: str) -> None:
    """The GPU code path (forced on here): BERT inside the item tower, top layer trainable, mixed negatives;
    with mixed precision on, BERT itself computes in float16 (it is loaded under the policy)."""
    items = planted_items().assign(text=["action movie film war"] * 10 + ["cook food recipe music"] * 10)
    opts = {
        "finetune_bert": "on",
        "finetune_bert_layers": 1,
        "num_sampled": 4,
        "jit_compile": "off",
        "mixed_precision": precision,
    }
    cfg = CFG.model_copy(update={"epochs": 2, "bert_checkpoint": str(tiny_bert_dir), "max_length": 8, **opts})
    model = train(planted_interactions(), items, ["user_clicks_28d"], [], cfg)
    assert model.options["finetuned_bert"] and model.options["loss"] == "mixed"
    pooler = model.item_tower.get_layer("bert_text")
    assert pooler.backbone.compute_dtype == compute_dtype
    trainable = [layer.trainable for layer in pooler.backbone.transformer_layers]
    assert trainable == [False, True]
    assert np.all(np.isfinite(model.history)) and model.item_embeddings.shape == (20, 8)
    np.testing.assert_allclose(np.linalg.norm(model.item_embeddings, axis=1), 1.0, atol=1e-5)


def test_weight_decay_shrinks_the_embeddings_and_a_weight_average_still_learns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = CFG.model_copy(update={"epochs": 3})
    plain = train(planted_interactions(), planted_items(), ["user_clicks_28d"], [], cfg)
    decayed = train(
        planted_interactions(),
        planted_items(),
        ["user_clicks_28d"],
        [],
        cfg.model_copy(update={"weight_decay": 1.0, "ema_momentum": 0.5}),
    )
    assert decayed.history[-1] < decayed.history[0] and np.all(np.isfinite(decayed.item_embeddings))
    assert not [r for r in caplog.records if "ema_momentum" in r.getMessage()]  # 9 steps suit 0.5

    def norm(model: TrainedModel) -> float:
        core = model.user_tower.get_layer("user_core")
        return float(np.linalg.norm(core.get_layer("user_embedding").get_weights()[0]))

    assert norm(decayed) < 0.9 * norm(plain)


def test_an_ensemble_serves_the_mean_score_of_its_members(tmp_path: Path) -> None:
    cfg = CFG.model_copy(update={"epochs": 3})
    args = (planted_interactions(), planted_items(), ["user_clicks_28d"], ["item_clicks_28d"])
    members = [train(*args, cfg.model_copy(update={"seed": cfg.seed + k})) for k in range(2)]
    joined = train(*args, cfg.model_copy(update={"ensemble": 2}))
    assert joined.item_embeddings.shape == (20, 2 * cfg.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(joined.item_embeddings, axis=1), 1.0, rtol=1e-5)
    users, feats = [0, 15, 999], _features([0, 15, 999])
    scores = [Scorer(m).user_vectors(users, feats, _recent(users)) @ m.item_embeddings.T for m in members]
    both = Scorer(joined).user_vectors(users, feats, _recent(users)) @ joined.item_embeddings.T
    np.testing.assert_allclose(both, (scores[0] + scores[1]) / 2, atol=1e-5)
    assert joined.history == pytest.approx(np.mean([m.history for m in members], axis=0).tolist())
    assert joined.options["ensemble"] == 2
    # It exports and loads as one user tower + one item matrix, with the same recommendations.
    loaded = load_artifact(export_artifact(joined, tmp_path / "v1", popular_item_ids=[100], metadata=METADATA))
    before = recommend(joined, users, feats, k=5, recent_item_ids=_recent(users))
    after = recommend(loaded, users, feats, k=5, recent_item_ids=_recent(users))
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a.item_ids, b.item_ids)


def test_a_weight_average_too_slow_for_the_run_is_flagged(caplog: pytest.LogCaptureFixture) -> None:
    cfg = CFG.model_copy(update={"epochs": 1, "ema_momentum": 0.999})
    train(planted_interactions(), planted_items(), ["user_clicks_28d"], [], cfg)
    assert any("ema_momentum 0.999 over 3 training steps" in r.getMessage() for r in caplog.records)


def test_a_popularity_prior_adds_its_weight_times_log_count_to_every_score(
    trained: TrainedModel, tmp_path: Path
) -> None:
    positives = planted_interactions()
    prior = with_popularity_prior(trained, positives, 0.5)
    counts = positives["item_id"].value_counts().reindex(trained.item_ids).fillna(0).to_numpy()
    users, feats = [0, 15, 999], _features([0, 15, 999])
    base = Scorer(trained).user_vectors(users, feats, _recent(users)) @ trained.item_embeddings.T
    scores = Scorer(prior).user_vectors(users, feats, _recent(users)) @ prior.item_embeddings.T
    np.testing.assert_allclose(scores, base + 0.5 * np.log1p(counts)[None, :], atol=1e-5)
    assert prior.item_embeddings.shape == (20, CFG.embedding_dim + 1) and prior.options["popularity_prior"] == 0.5
    # One artifact as before: it exports, loads (built-in layers only) and recommends the same.
    loaded = load_artifact(export_artifact(prior, tmp_path / "v1", popular_item_ids=[100], metadata=METADATA))
    before = recommend(prior, users, feats, k=5, recent_item_ids=_recent(users))
    after = recommend(loaded, users, feats, k=5, recent_item_ids=_recent(users))
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a.item_ids, b.item_ids)
    # train() applies it from the settings
    cfg = CFG.model_copy(update={"epochs": 2, "popularity_prior": 0.5})
    model = train(positives, planted_items(), ["user_clicks_28d"], ["item_clicks_28d"], cfg)
    np.testing.assert_allclose(model.item_embeddings[:, -1], 0.5 * np.log1p(counts), rtol=1e-6)
