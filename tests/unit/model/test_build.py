"""The build seam under ``train``: settings checks, inputs, the plan, the compiled model, precision, item matrix."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import keras
import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from planted import planted_items
from recsys.config import ModelSettings
from recsys.errors import ConfigError, TrainingError
from recsys.model import backend
from recsys.model.build import (
    TWO_TOWER_OPTIONS,
    build_model,
    check_settings,
    plan_build,
    precision_policy,
    precision_scope,
    prepare_inputs,
    resolve_flag,
)
from recsys.model.fit import item_matrix
from recsys.model.two_tower import ITEM_EMBEDDING, ITEM_FEATURES, ITEM_INDEX

CFG = ModelSettings(
    embedding_dim=4, epochs=1, batch_size=8, learning_rate=0.05, history_length=3, history_id_dim=2, num_sampled=4
)


def _positives() -> pd.DataFrame:
    """Users 1-3; items 100, 101, 110 and 111 have positives, the other 16 catalog items none."""
    start = pd.Timestamp("2024-01-01", tz="UTC")
    rows = [(1, 100), (1, 101), (2, 110), (2, 111), (3, 100), (3, 110)]
    return pd.DataFrame(
        [(u, i, start + pd.Timedelta(hours=n)) for n, (u, i) in enumerate(rows)],
        columns=["user_id", "item_id", "event_timestamp"],
    )


def _inputs(cfg: ModelSettings = CFG) -> Any:
    return prepare_inputs(_positives(), planted_items(), [], ["item_clicks_28d"], cfg)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"epochs": 0}, "model.epochs is 0; it must be a positive integer"),
        ({"batch_size": -1}, "model.batch_size is -1"),
        ({"learning_rate": 0.0}, "model.learning_rate and model.temperature must be > 0"),
        ({"temperature": -0.1}, "model.learning_rate and model.temperature must be > 0"),
        ({"loss": "softmax"}, "training option loss is 'softmax'; choose one of"),
        ({"history_length": -1}, "history_length, history_id_dim and num_sampled must be >= 0"),
        ({"id_dropout": 1.0}, r"id_dropout is 1.0; it must be in \[0, 1\)"),
        ({"ranking_loss_weight": float("nan")}, "ranking_loss_weight is nan"),
        ({"num_negatives": 4}, r"unknown training options \['num_negatives'\]"),
    ],
)
def test_copies_that_skip_validation_are_checked(update: dict[str, Any], message: str) -> None:
    with pytest.raises(TrainingError, match=message):
        check_settings(CFG.model_copy(update=update))


def test_the_same_rules_hold_when_settings_are_built() -> None:
    check_settings(CFG)
    for bad in ({"epochs": 0}, {"learning_rate": 0.0}, {"temperature": 0.0}, {"ranking_loss_weight": float("inf")}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            ModelSettings(**bad)


def test_flags_resolve_and_reject_unknown_values() -> None:
    assert resolve_flag("on", "jit") is True and resolve_flag("off", "jit") is False
    assert resolve_flag("auto", "jit") is bool(backend.gpus())
    with pytest.raises(TrainingError, match="training option jit is 'yes'; use 'auto', 'on' or 'off'"):
        resolve_flag("yes", "jit")


def test_the_plan_holds_vocabularies_and_the_frozen_text_catalog() -> None:
    inputs = _inputs()
    plan = plan_build(inputs, CFG.model_copy(update={"finetune_bert": "off"}))
    assert plan.user_vocab.tolist() == [1, 2, 3] and plan.item_vocab.tolist() == [100, 101, 110, 111]
    assert plan.loss == "full_catalog" and not plan.finetune and plan.backbone is None
    assert set(plan.catalog) == {ITEM_EMBEDDING, ITEM_FEATURES, ITEM_INDEX}
    # Catalog row i is item 100 + i; only items with a positive get an id (1-based), the rest the OOV row 0.
    assert plan.catalog[ITEM_INDEX].tolist() == [1, 2] + [0] * 8 + [3, 4] + [0] * 8
    assert plan.catalog[ITEM_EMBEDDING].shape == (20, 8) and plan.catalog[ITEM_FEATURES].shape == (20, 1)
    without_ids = plan_build(inputs, CFG.model_copy(update={"item_id_embedding": False, "finetune_bert": "off"}))
    assert without_ids.item_vocab.size == 0 and ITEM_INDEX not in without_ids.catalog


def test_the_built_model_is_compiled_and_its_item_matrix_covers_the_catalog() -> None:
    cfg = CFG.model_copy(update={"finetune_bert": "off", "jit_compile": "off", "loss": "mixed"})
    inputs = _inputs(cfg)
    plan = plan_build(inputs, cfg)
    model = build_model(inputs, cfg, plan)
    assert model.compiled and model.loss_name == "mixed" and model.num_sampled == 4
    assert type(model.optimizer).__name__ == "Adam" and model.catalog_size == 20
    matrix = item_matrix(model, 20)
    assert matrix.shape == (20, 4) and matrix.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(matrix, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(item_matrix(model, 20, chunk=3), matrix, atol=1e-6)  # chunks change nothing
    decayed = build_model(inputs, cfg.model_copy(update={"weight_decay": 0.1}), plan)
    assert type(decayed.optimizer).__name__ == "AdamW"


def test_the_ranking_loss_bias_starts_at_the_labels_log_odds() -> None:
    cfg = CFG.model_copy(update={"finetune_bert": "off", "jit_compile": "off", "ranking_loss_weight": 0.5})
    impressions = _positives().assign(label=[1, 0, 0, 0, 1, 0])  # 2 of 6 positive
    inputs = prepare_inputs(_positives(), planted_items(), [], ["item_clicks_28d"], cfg, impressions)
    model = build_model(inputs, cfg, plan_build(inputs, cfg))
    assert model.ranking_weight == 0.5
    assert float(keras.ops.convert_to_numpy(model.ranking_bias)) == pytest.approx(np.log(2 / 4), rel=1e-6)


def test_the_precision_scope_sets_the_policy_and_restores_it() -> None:
    before = keras.mixed_precision.dtype_policy().name
    assert precision_policy(CFG.model_copy(update={"mixed_precision": "off"})) == before
    with precision_scope(CFG.model_copy(update={"mixed_precision": "on"})) as policy:
        assert policy == "mixed_float16" == keras.mixed_precision.dtype_policy().name
    assert keras.mixed_precision.dtype_policy().name == before
    with pytest.raises(RuntimeError, match="inside"), precision_scope(CFG.model_copy(update={"mixed_precision": "on"})):
        raise RuntimeError("inside")
    assert keras.mixed_precision.dtype_policy().name == before


def test_trained_options_are_the_two_tower_settings() -> None:
    assert set(TWO_TOWER_OPTIONS) <= set(ModelSettings.model_fields)
    assert len(TWO_TOWER_OPTIONS) == 15 and "popularity_prior" not in TWO_TOWER_OPTIONS


def test_training_refuses_another_keras_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    backend.require_tensorflow("training")  # this process runs Keras on TensorFlow
    monkeypatch.setattr(backend, "keras_backend", lambda: "jax")
    with pytest.raises(ConfigError, match="imported with the 'jax' backend, but training runs on TensorFlow"):
        backend.require_tensorflow("training")
    monkeypatch.delitem(sys.modules, "keras")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(ConfigError, match="KERAS_BACKEND is 'jax', but training runs on TensorFlow"):
        backend.require_tensorflow("training")


def test_importing_the_model_package_sets_no_keras_backend() -> None:
    code = (
        "import os, sys\n"
        "import recsys.model, recsys.model.evaluate, recsys.model.inference\n"
        "light = 'keras' not in sys.modules\n"
        "import recsys.model.fit, recsys.model.encoder, recsys.model.protocol\n"
        "print(light, 'KERAS_BACKEND' in os.environ)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
