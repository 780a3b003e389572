"""Item text encoder: pooling, normalisation, checkpoint resolution and the incremental embeddings table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.config import PACKAGED_BERT, ModelSettings, Settings
from recsys.errors import ConfigError
from recsys.model.encoder import encode_items, load_encoder, ops_forward, resolve_checkpoint, tensorflow_forward


def test_encode_gives_unit_float32_vectors(tiny_encoder: Any) -> None:
    out = tiny_encoder.encode(["space robot war", "love story", ""], batch_size=2)
    assert out.shape == (3, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(out[0], out[1])


def test_encode_of_nothing_is_empty(tiny_encoder: Any) -> None:
    assert tiny_encoder.encode([]).shape == (0, 32)


def test_mean_pooling_ignores_padding(tiny_encoder: Any) -> None:
    short = "space robot"
    long = "the story of a movie about love and war in the city by the sea"
    alone = tiny_encoder.encode([short])[0]
    padded = tiny_encoder.encode([short, long], batch_size=2)[0]
    np.testing.assert_allclose(alone, padded, atol=1e-5)


def test_pooling_is_the_masked_mean_of_the_last_hidden_states(tiny_encoder: Any) -> None:
    texts = ["space robot", "the story of a movie about love"]
    tokens = tiny_encoder.tokenize(texts)
    hidden = np.asarray(tiny_encoder.backbone(tokens)["sequence_output"])
    mask = tokens["padding_mask"].astype(bool)
    expected = np.stack([hidden[i][mask[i]].mean(axis=0) for i in range(2)])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(tiny_encoder.encode(texts), expected, atol=1e-5)


def test_the_keras_ops_forward_equals_the_tf_function(tiny_encoder: Any) -> None:
    """The forward other Keras backends run (JAX on the accelerator check) is the TensorFlow one's math."""
    tokens = tiny_encoder.tokenize(["space robot", "the story of a movie about love", ""])
    args = (tokens["token_ids"], tokens["segment_ids"], tokens["padding_mask"])
    expected = np.asarray(tensorflow_forward(tiny_encoder.backbone)(*args))
    np.testing.assert_allclose(np.asarray(ops_forward(tiny_encoder.backbone, "tensorflow")(*args)), expected, atol=1e-6)
    np.testing.assert_allclose(tiny_encoder.encode(["space robot", "the story of a movie about love", ""]), expected)


def test_truncates_to_max_length(tiny_encoder: Any) -> None:
    tokens = tiny_encoder.tokenize([" ".join(["movie"] * 100)])
    assert tokens["token_ids"].shape == (1, 16)


def test_non_string_text_is_rejected(tiny_encoder: Any) -> None:
    with pytest.raises(ValueError, match="position 1"):
        tiny_encoder.encode(["ok", None])  # type: ignore[list-item]


def test_resolve_packaged_checkpoint() -> None:
    source = resolve_checkpoint(PACKAGED_BERT)
    assert (Path(source.preset) / "config.json").is_file()
    assert source.preset == source.tokenizer


@pytest.mark.parametrize(
    ("checkpoint", "preset", "tokenizer"),
    [
        ("hf://org/bert-x", "hf://org/bert-x", "org/bert-x"),
        ("bert-base-chinese", "hf://bert-base-chinese", "bert-base-chinese"),
    ],
)
def test_resolve_hub_checkpoints(checkpoint: str, preset: str, tokenizer: str) -> None:
    source = resolve_checkpoint(checkpoint)
    assert (source.preset, source.tokenizer) == (preset, tokenizer)


def test_resolve_rejects_bad_local_dirs(tmp_path: Path, tiny_bert_dir: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        resolve_checkpoint(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=r"model\.safetensors"):
        resolve_checkpoint(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (tmp_path / "model.safetensors").write_bytes((tiny_bert_dir / "model.safetensors").read_bytes())
    with pytest.raises(ConfigError, match="gpt2"):
        resolve_checkpoint(str(tmp_path))


def _items(texts: dict[int, str], updated: str) -> pd.DataFrame:
    import hashlib

    return pd.DataFrame(
        {
            "item_id": list(texts),
            "title": [t.split()[0] for t in texts.values()],
            "text": list(texts.values()),
            "content_hash": [hashlib.md5(t.encode()).hexdigest() for t in texts.values()],
            "updated_at": pd.Timestamp(updated, tz="UTC"),
        }
    )


def test_encode_items_reencodes_only_changed_hashes(tmp_path: Path, tiny_bert_dir: Path, tiny_encoder: Any) -> None:
    settings = Settings(home=tmp_path, model=ModelSettings(bert_checkpoint=str(tiny_bert_dir), max_length=16))
    first = encode_items(settings, _items({1: "space robot", 2: "love story", 3: "football team"}, "2024-01-01"))
    assert (first.encoded, first.reused, len(first.table)) == (3, 0, 3)
    assert first.rebuilt  # a new table: the warehouse copy is replaced (encode_stage publishes it)
    schema = pq.read_schema(settings.embeddings_path)
    assert schema.field("embedding").type == pa.list_(pa.float32())
    assert schema.field("event_timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("item_id").type == pa.int64()

    again = encode_items(settings, _items({1: "space robot", 2: "love story", 3: "football team"}, "2024-01-02"))
    assert (again.encoded, again.reused, again.appended, len(again.table)) == (0, 3, 0, 3)
    assert not again.rebuilt

    changed = _items({1: "space robot", 2: "war drama", 3: "football team"}, "2024-01-03")
    third = encode_items(settings, changed, encoder=tiny_encoder)
    assert (third.encoded, third.reused, len(third.table)) == (1, 2, 4)
    stored = pd.read_parquet(settings.embeddings_path)
    rows2 = stored[stored["item_id"] == 2].sort_values("event_timestamp")
    np.testing.assert_allclose(
        np.asarray(rows2["embedding"].iloc[-1]), tiny_encoder.encode(["war drama"])[0], atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(rows2["embedding"].iloc[0]), tiny_encoder.encode(["love story"])[0], atol=1e-5
    )
    assert rows2["event_timestamp"].iloc[-1] == pd.Timestamp("2024-01-03", tz="UTC")

    reverted = encode_items(settings, _items({2: "love story"}, "2024-01-04"), encoder=tiny_encoder)
    assert (reverted.encoded, reverted.appended, len(reverted.table)) == (0, 1, 5)
    assert not list(settings.embeddings_path.parent.glob("*.tmp"))
    summary = dict(reverted)
    assert summary == {"encoded": 0, "reused": 1, "appended": 1, "rows": 5, "path": str(settings.embeddings_path)}


def test_encode_items_rejects_items_without_hash(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="content_hash"):
        encode_items(Settings(home=tmp_path), pd.DataFrame({"item_id": [1], "text": ["x"]}))


@pytest.mark.slow
def test_packaged_minilm_puts_similar_texts_closer() -> None:
    encoder = load_encoder(PACKAGED_BERT, max_length=32)
    out = encoder.encode(["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock markets fell sharply."])
    assert out.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert out[0] @ out[1] > out[0] @ out[2] + 0.2
