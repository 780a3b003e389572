"""Reads and writes of the configured warehouse: DuckDB + Parquet (default) or PostgreSQL.

``settings.warehouse_target`` picks where the marts live: ``duckdb`` exports them as
``{marts_dir}/<mart>.parquet``; ``postgres`` keeps them as tables in the schema of the dbt models (the
``postgres`` settings section, :class:`recsys.transform.postgres.PostgresWarehouse`). :func:`read_mart`
returns the same pandas frame from either: the rows go through Arrow with the Parquet export's types
(int64 ids and counts, float64 ratios, ``datetime64[us, UTC]`` timestamps, ``datetime.date`` days,
arrays of int64 for list columns), ordered by the mart's key as the models order them.

The item text embeddings are written by the encoder to a Parquet file (its incremental cache, and the
DuckDB offline store's source); with the Postgres warehouse :func:`publish_embeddings` mirrors that table
into ``<schema>.item_text_embedding``, the Feast source of the ``item_text_embedding`` view.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.config import Settings
from recsys.errors import TransformError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from recsys.transform.postgres import PostgresWarehouse

EMBEDDINGS_TABLE = "item_text_embedding"
# Row order of each mart, as its dbt model orders it (text keys compare bytewise, as DuckDB does).
MART_ORDER: dict[str, tuple[str, ...]] = {
    "fct_interactions": ('"event_id" collate "C"',),
    "user_daily_features": ('"user_id"', '"feature_date"'),
    "item_daily_features": ('"item_id"', '"feature_date"'),
    "item_texts": ('"item_id"',),
    "user_recent_items": ('"user_id"', '"feature_date"'),
}
_FETCH_ROWS = 50_000
# The identity of an embeddings row: item, content version and its timestamp (in µs since the epoch).
_KEY_SQL = "item_id, content_hash, (extract(epoch from event_timestamp) * 1000000)::bigint"


class MissingMartError(TransformError):
    """A mart the caller needs has not been built in the configured warehouse."""


def read_mart(settings: Settings, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The mart ``name`` (all rows; ``columns`` or all of them) from the configured warehouse.

    Raises :class:`MissingMartError` when the mart has not been built (run the transform stage first).
    """
    if settings.warehouse_target == "postgres":
        from recsys.transform.postgres import postgres_warehouse

        return _read_postgres(postgres_warehouse(settings), name, columns)
    return _read_parquet(settings.marts / f"{name}.parquet", columns)


def mart_location(settings: Settings, name: str) -> Path:
    """Where the mart lives (for messages and records): its Parquet file or ``postgresql:host:port/db/schema.name``."""
    if settings.warehouse_target == "postgres":
        from recsys.transform.postgres import postgres_warehouse

        wh = postgres_warehouse(settings)
        return Path(f"postgresql:{wh.host}:{wh.port}") / wh.dbname / f"{wh.schema_name}.{name}"
    return settings.marts / f"{name}.parquet"


def _read_parquet(path: Path, columns: Sequence[str] | None) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise MissingMartError(f"No mart at {path}: run the transform stage (dbt build) first.")
    return pd.read_parquet(path, columns=list(columns) if columns is not None else None)


def _read_postgres(warehouse: PostgresWarehouse, name: str, columns: Sequence[str] | None) -> pd.DataFrame:
    """Stream the mart through a server-side cursor into Arrow (typed by column OID), then to pandas."""
    import pyarrow as pa

    select = "*" if columns is None else ", ".join(f'"{c}"' for c in columns)
    order = f" order by {', '.join(MART_ORDER[name])}" if name in MART_ORDER else ""
    with warehouse.connect() as conn:
        _require_relation(conn, warehouse, name)
        with conn, conn.cursor() as cur:
            cur.execute("set time zone 'UTC'")
        with conn, conn.cursor(name=f"read_mart_{name}") as cur:
            cur.itersize = _FETCH_ROWS
            cur.execute(f"select {select} from {warehouse.qualified(name)}{order}")
            batches = list(_record_batches(cur))
            schema = _arrow_schema(cur.description)
    return pa.Table.from_batches(batches, schema=schema).to_pandas()


def _require_relation(conn: Any, warehouse: PostgresWarehouse, name: str) -> None:
    with conn, conn.cursor() as cur:
        cur.execute("select to_regclass(%s)", (warehouse.qualified(name),))
        (found,) = cur.fetchone()
    if found is None:
        raise MissingMartError(
            f"No mart {warehouse.qualified(name)} in PostgreSQL database {warehouse.dbname!r} on "
            f"{warehouse.host}:{warehouse.port}: run the transform stage (dbt build --target postgres) first."
        )


def _record_batches(cur: Any) -> Iterator[pa.RecordBatch]:
    import pyarrow as pa

    while rows := cur.fetchmany(_FETCH_ROWS):
        schema = _arrow_schema(cur.description)
        columns = list(zip(*rows, strict=True))
        yield pa.RecordBatch.from_arrays(
            [pa.array(values, type=field.type) for values, field in zip(columns, schema, strict=True)], schema=schema
        )


def _arrow_schema(description: Any) -> pa.Schema:
    """Arrow types of the result columns, by PostgreSQL type OID (the Parquet export's types)."""
    import pyarrow as pa

    by_oid = {
        16: pa.bool_(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(), 25: pa.string(), 700: pa.float32(),
        701: pa.float64(), 1043: pa.string(), 1082: pa.date32(), 1114: pa.timestamp("us"),
        1184: pa.timestamp("us", tz="UTC"), 1000: pa.list_(pa.bool_()), 1007: pa.list_(pa.int32()),
        1009: pa.list_(pa.string()), 1016: pa.list_(pa.int64()), 1021: pa.list_(pa.float32()),
        1022: pa.list_(pa.float64()),
    }  # fmt: skip
    fields = []
    for column in description or []:
        if column.type_code not in by_oid:
            raise TransformError(
                f"Mart column {column.name!r} has a PostgreSQL type (oid {column.type_code}) the mart reader does "
                "not map: cast it in the dbt model to bigint, double precision, text, date, timestamptz or an "
                "array of those."
            )
        fields.append(pa.field(column.name, by_oid[column.type_code]))
    return pa.schema(fields)


# --- item text embeddings in the Postgres offline store ---------------------------------------------------


def publish_embeddings(settings: Settings, table: pd.DataFrame, *, rebuilt: bool = False) -> int:
    """Mirror the encoder's embeddings table into the warehouse the Feast offline store reads; rows written.

    A no-op for the DuckDB warehouse (Feast reads the Parquet file itself). For PostgreSQL,
    ``<schema>.item_text_embedding`` is made to hold exactly the rows of ``table``, keyed by
    ``(item_id, content_hash, event_timestamp)``: rows it lacks are copied in, rows ``table`` lacks are
    deleted, all in one transaction, so a re-run changes nothing. ``rebuilt=True`` (the Parquet cache was
    started from scratch, e.g. for a new checkpoint) replaces every row, since vectors of known keys may differ.
    """
    if settings.warehouse_target != "postgres":
        return 0
    from recsys.transform.postgres import postgres_warehouse

    warehouse = postgres_warehouse(settings)
    target = warehouse.qualified(EMBEDDINGS_TABLE)
    with warehouse.connect() as conn, conn, conn.cursor() as cur:
        cur.execute(f'create schema if not exists "{warehouse.schema_name}"')
        cur.execute(
            f"create table if not exists {target} (item_id bigint not null, content_hash text not null, "
            "embedding real[] not null, event_timestamp timestamptz not null, "
            "primary key (item_id, content_hash, event_timestamp))"
        )
        cur.execute(f"lock table {target} in exclusive mode")
        keys = _row_keys(table)
        if rebuilt:
            cur.execute(f"truncate {target}")
            stored: set[tuple[int, str, int]] = set()
        else:
            cur.execute(f"select {_KEY_SQL} from {target}")
            stored = set(cur.fetchall())
        gone = stored - set(keys)
        if gone:
            cur.execute(
                f"delete from {target} where ({_KEY_SQL}) in "
                "(select * from unnest(%s::bigint[], %s::text[], %s::bigint[]))",
                tuple(map(list, zip(*gone, strict=True))),
            )
        missing = [i for i, key in enumerate(keys) if key not in stored]
        if missing:
            cur.copy_expert(
                f"copy {target} (item_id, content_hash, embedding, event_timestamp) from stdin with (format csv)",
                _embeddings_csv(table.iloc[missing]),
            )
    return len(missing)


def _row_keys(table: pd.DataFrame) -> list[tuple[int, str, int]]:
    """``(item_id, content_hash, event_timestamp in µs since the epoch)`` per row."""
    import pandas as pd

    micros = pd.to_datetime(table["event_timestamp"], utc=True).astype("datetime64[us, UTC]").astype("int64")
    item_ids, hashes = table["item_id"].astype("int64").tolist(), table["content_hash"].astype(str).tolist()
    return list(zip(item_ids, hashes, micros.tolist(), strict=True))


def _embeddings_csv(rows: pd.DataFrame) -> io.StringIO:
    """Rows as CSV for COPY; vectors as array literals of exact (round-tripping) float32 values."""
    import numpy as np
    import pandas as pd

    stamps = pd.to_datetime(rows["event_timestamp"], utc=True)
    out = io.StringIO()
    for item_id, content_hash, vector, ts in zip(
        rows["item_id"], rows["content_hash"], rows["embedding"], stamps, strict=True
    ):
        values = ",".join(map(repr, np.asarray(vector, dtype=np.float32).tolist()))
        quoted_hash = '"' + str(content_hash).replace('"', '""') + '"'
        out.write(f'{int(item_id)},{quoted_hash},"{{{values}}}",{ts.isoformat()}\n')
    out.seek(0)
    return out
