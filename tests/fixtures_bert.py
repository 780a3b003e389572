"""A tiny random BERT checkpoint in Hugging Face format, so tests never need the pretrained MiniLM.

``write_tiny_bert(path)`` writes ``config.json`` (``model_type: bert``, 2 layers, hidden 32, 2 heads),
``model.safetensors`` with the Hugging Face ``BertModel`` weight names that keras-hub's transformers
converter reads (``keras_hub/src/utils/transformers/convert_bert.py``), and the tokenizer files
(``vocab.txt``, ``tokenizer_config.json``, ``special_tokens_map.json``). The weights are seeded, so two
calls with the same seed write the same checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a of and to in is on for with movie film story action comedy drama horror romance thriller "
    "space alien robot war love family friend music song dance cook food recipe travel city sea "
    "mountain football soccer goal team game player news politics science physics chemistry history "
    "art painting"
).split()

HIDDEN = 32
LAYERS = 2
HEADS = 2
INTERMEDIATE = 64
MAX_POSITIONS = 64
TYPE_VOCAB = 2


def tiny_bert_config(vocab_size: int) -> dict[str, object]:
    """The ``config.json`` of the tiny model (Hugging Face ``BertConfig`` keys)."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": vocab_size,
        "hidden_size": HIDDEN,
        "num_hidden_layers": LAYERS,
        "num_attention_heads": HEADS,
        "intermediate_size": INTERMEDIATE,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": MAX_POSITIONS,
        "type_vocab_size": TYPE_VOCAB,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
    }


def _layer_weights(i: int, draw) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    p = f"encoder.layer.{i}."
    w: dict[str, np.ndarray] = {}
    for name in ("query", "key", "value"):
        w[f"{p}attention.self.{name}.weight"] = draw(HIDDEN, HIDDEN)
        w[f"{p}attention.self.{name}.bias"] = draw(HIDDEN)
    w[f"{p}attention.output.dense.weight"] = draw(HIDDEN, HIDDEN)
    w[f"{p}attention.output.dense.bias"] = draw(HIDDEN)
    w[f"{p}attention.output.LayerNorm.weight"] = np.ones(HIDDEN, np.float32)
    w[f"{p}attention.output.LayerNorm.bias"] = np.zeros(HIDDEN, np.float32)
    # Hugging Face Linear weights are [out, in].
    w[f"{p}intermediate.dense.weight"] = draw(INTERMEDIATE, HIDDEN)
    w[f"{p}intermediate.dense.bias"] = draw(INTERMEDIATE)
    w[f"{p}output.dense.weight"] = draw(HIDDEN, INTERMEDIATE)
    w[f"{p}output.dense.bias"] = draw(HIDDEN)
    w[f"{p}output.LayerNorm.weight"] = np.ones(HIDDEN, np.float32)
    w[f"{p}output.LayerNorm.bias"] = np.zeros(HIDDEN, np.float32)
    return w


def tiny_bert_weights(vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 weights named as in a Hugging Face ``BertModel`` state dict."""
    rng = np.random.default_rng(seed)

    def draw(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.2).astype(np.float32)

    weights = {
        "embeddings.word_embeddings.weight": draw(vocab_size, HIDDEN),
        "embeddings.position_embeddings.weight": draw(MAX_POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": draw(TYPE_VOCAB, HIDDEN),
        "embeddings.LayerNorm.weight": np.ones(HIDDEN, np.float32),
        "embeddings.LayerNorm.bias": np.zeros(HIDDEN, np.float32),
        "pooler.dense.weight": draw(HIDDEN, HIDDEN),
        "pooler.dense.bias": draw(HIDDEN),
    }
    for i in range(LAYERS):
        weights.update(_layer_weights(i, draw))
    return weights


def write_tiny_bert(path: Path, seed: int = 0) -> Path:
    """Write a tiny random BERT checkpoint (HF format) into ``path`` and return ``path``."""
    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL_TOKENS + WORDS
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (path / "config.json").write_text(json.dumps(tiny_bert_config(len(vocab)), indent=2))
    special = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"), SPECIAL_TOKENS, strict=True))
    (path / "special_tokens_map.json").write_text(json.dumps(special))
    tokenizer_config = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": True,
        "model_max_length": MAX_POSITIONS,
        **special,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    save_file(tiny_bert_weights(len(vocab), seed), str(path / "model.safetensors"), metadata={"format": "pt"})
    return path
