"""Reading marts and publishing embeddings through the configured warehouse (the DuckDB/Parquet side and the
pieces that need no server; the PostgreSQL side is tests/integration/test_postgres_run_mode.py)."""

from __future__ import annotations

import csv
from collections import namedtuple
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys.config import Settings
from recsys.errors import MissingMartError, TransformError
from recsys.transform.warehouse import _arrow_schema, _embeddings_csv, mart_location, publish_embeddings, read_mart


def test_read_mart_reads_the_parquet_export(settings: Settings) -> None:
    settings.marts.mkdir(parents=True)
    table = pa.table(
        {
            "item_id": pa.array([2, 1], pa.int64()),
            "updated_at": pa.array([datetime(2024, 1, 1, tzinfo=UTC)] * 2, pa.timestamp("us", tz="UTC")),
            "text": ["b", "a"],
        }
    )
    pq.write_table(table, settings.marts / "item_texts.parquet")
    frame = read_mart(settings, "item_texts", columns=["item_id", "updated_at"])
    assert list(frame.columns) == ["item_id", "updated_at"]
    assert str(frame["updated_at"].dtype) == "datetime64[us, UTC]"
    assert mart_location(settings, "item_texts") == settings.marts / "item_texts.parquet"


def test_a_missing_mart_says_to_run_the_transform_stage(settings: Settings) -> None:
    with pytest.raises(MissingMartError, match="transform stage"):
        read_mart(settings, "interactions")
    assert issubclass(MissingMartError, TransformError)


def test_postgres_location_names_server_database_and_table(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, warehouse={"target": "postgres", "postgres": {"dbname": "wh", "schema_name": "marts"}})
    assert str(mart_location(s, "item_texts")) == "postgresql:127.0.0.1:5432/wh/marts.item_texts"


def test_publishing_embeddings_is_a_no_op_for_duckdb(settings: Settings) -> None:
    assert publish_embeddings(settings, pd.DataFrame()) == 0


def test_unmapped_postgres_types_are_refused_with_advice() -> None:
    column = namedtuple("Column", "name type_code")
    assert _arrow_schema([column("n", 20), column("at", 1184)]) == pa.schema(
        [("n", pa.int64()), ("at", pa.timestamp("us", tz="UTC"))]
    )
    with pytest.raises(TransformError, match="cast it in the dbt model"):
        _arrow_schema([column("amount", 1700)])  # numeric


def test_embedding_rows_copy_as_exact_float32_literals() -> None:
    vector = np.array([0.1, -1 / 3, 1e-8, 0.0], dtype=np.float32)
    rows = pd.DataFrame(
        {
            "item_id": [7],
            "content_hash": ['a"b'],
            "embedding": [vector],
            "event_timestamp": [pd.Timestamp("2024-01-02T03:04:05.000006Z")],
        }
    )
    (line,) = csv.reader(_embeddings_csv(rows))
    item_id, content_hash, literal, stamp = line
    assert (item_id, content_hash) == ("7", 'a"b')
    parsed = np.array([float(v) for v in literal.strip("{}").split(",")], dtype=np.float32)
    np.testing.assert_array_equal(parsed, vector)
    assert pd.Timestamp(stamp) == rows["event_timestamp"][0]
