"""Reads and writes of the configured warehouse: DuckDB + Parquet (default) or PostgreSQL.

``settings.warehouse.target`` picks where the marts live: ``duckdb`` exports them as
``{marts_dir}/<mart>.parquet``; ``postgres`` keeps them as tables in the schema of the dbt models (the
``warehouse.postgres`` settings section). :func:`read_mart`
returns the same pandas frame from either: the rows go through Arrow with the Parquet export's types
(int64 ids and counts, float64 ratios, ``datetime64[us, UTC]`` timestamps, ``datetime.date`` days,
arrays of int64 for list columns), ordered by the mart's key as the models order them.

The item text embeddings are written by the encoder to a Parquet file (its incremental cache, and the
DuckDB offline store's source); with the Postgres warehouse :func:`publish_embeddings` mirrors that table
into ``<schema>.item_text_embedding``, the Feast source of the ``item_text_embedding`` view.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.config import PostgresSettings, Settings
from recsys.errors import MissingMartError, TransformError
from recsys.transform.postgres import connect, table

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

EMBEDDINGS_TABLE = "item_text_embedding"
# The Spark warehouse is configuration for the scale-out (docs/scale-out.md): dbt-spark builds the marts and Feast's
# Spark store reads them, but no Python stage here reads or writes Spark tables yet.
SPARK_UNREAD = (
    "{what} on the Spark warehouse is not supported: the mart gates and the embeddings table need a Spark "
    "reader/writer this project does not have yet (docs/scale-out.md). Use warehouse.target duckdb or postgres."
)
# Row order of each mart, as its dbt model orders it; a text key compares bytewise (collation "C"), as DuckDB does.
MART_ORDER: dict[str, tuple[tuple[str, bool], ...]] = {
    "interactions": (("event_id", True),),
    "user_daily_features": (("user_id", False), ("feature_date", False)),
    "item_daily_features": (("item_id", False), ("feature_date", False)),
    "item_texts": (("item_id", False),),
    "user_recent_items": (("user_id", False), ("feature_date", False)),
}
_FETCH_ROWS = 50_000
# Marts with one row per entity and day: their rows of a data interval are those of its days.
DAILY_MARTS = ("user_daily_features", "item_daily_features", "user_recent_items")
# The identity of an embeddings row: item, content version and its timestamp (in µs since the epoch).
_KEY_SQL = "item_id, content_hash, (extract(epoch from event_timestamp) * 1000000)::bigint"


def read_mart(settings: Settings, name: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """The mart ``name`` (all rows; ``columns`` or all of them) from the configured warehouse.

    Raises :class:`MissingMartError` when the mart has not been built (run the transform stage first), and
    :class:`TransformError` on the Spark warehouse, whose marts only Feast's Spark offline store reads.
    """
    if settings.warehouse.target == "spark":
        raise TransformError(SPARK_UNREAD.format(what=f"reading the mart {name!r}"))
    if settings.warehouse.target == "postgres":
        return _read_postgres(settings.warehouse.postgres, name, columns)
    return _read_parquet(settings.marts / f"{name}.parquet", columns)


def interval_rows(
    settings: Settings, name: str, start: datetime, end: datetime
) -> tuple[int, pa.Schema, Callable[[], Iterator[pa.RecordBatch]]]:
    """The mart rows of the data interval ``[start, end)`` without loading them: their count, Arrow schema, and
    a reader of record batches (it may be called again; each call reads the rows afresh).

    ``interactions`` rows by ``occurred_at``, the daily marts by ``feature_date`` (a day counts when its UTC
    midnight lies in the interval), any other mart whole (``item_texts``: the current catalog).
    """
    if settings.warehouse.target == "spark":
        raise TransformError(SPARK_UNREAD.format(what=f"reading the mart {name!r}"))
    column, lo, hi = _interval_filter(name, start, end)
    if settings.warehouse.target == "postgres":
        return _postgres_interval(settings.warehouse.postgres, name, column, lo, hi)
    return _parquet_interval(settings.marts / f"{name}.parquet", column, lo, hi)


def _interval_filter(name: str, start: datetime, end: datetime) -> tuple[str | None, Any, Any]:
    """The column that places a mart's row in time, and the bounds ``[lo, hi)`` an interval puts on it."""
    from datetime import UTC, timedelta

    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if name == "interactions":
        return "occurred_at", start, end

    def first_day_from(t: datetime) -> Any:  # the first day whose UTC midnight is at or after t
        midnight = t.replace(hour=0, minute=0, second=0, microsecond=0)
        return t.date() if t == midnight else t.date() + timedelta(days=1)

    if name in DAILY_MARTS:
        return "feature_date", first_day_from(start), first_day_from(end)
    return None, None, None


def _parquet_interval(
    path: Path, column: str | None, lo: Any, hi: Any
) -> tuple[int, pa.Schema, Callable[[], Iterator[pa.RecordBatch]]]:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not path.is_file():
        raise MissingMartError(f"No mart at {path}: run the transform stage (dbt build) first.")

    def batches(columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        with pq.ParquetFile(path, pre_buffer=False) as parquet:
            for batch in parquet.iter_batches(batch_size=_FETCH_ROWS, columns=columns, use_threads=False):
                if column is None:
                    yield batch
                    continue
                values = batch.column(column)
                keep = pc.and_(
                    pc.greater_equal(values, pa.scalar(lo, values.type)), pc.less(values, pa.scalar(hi, values.type))
                )
                yield batch.filter(keep)

    rows = sum(b.num_rows for b in batches([column] if column else None))
    return rows, pq.read_schema(path), batches


def _postgres_interval(
    pg: PostgresSettings, name: str, column: str | None, lo: Any, hi: Any
) -> tuple[int, pa.Schema, Callable[[], Iterator[pa.RecordBatch]]]:
    from psycopg2 import sql

    where, params = sql.SQL(""), ()
    if column is not None:
        where, params = sql.SQL(" where {c} >= %s and {c} < %s").format(c=sql.Identifier(column)), (lo, hi)
    source = table(pg.schema_name, name)
    with connect(pg) as conn:
        _require_relation(conn, pg, name)
        with conn, conn.cursor() as cur:
            cur.execute(sql.SQL("select count(*) from {}{}").format(source, where), params)
            (rows,) = cur.fetchone()
            cur.execute(sql.SQL("select * from {} limit 0").format(source))
            schema = _arrow_schema(cur.description)

    def batches() -> Iterator[pa.RecordBatch]:
        with connect(pg) as conn:
            with conn, conn.cursor() as cur:
                cur.execute("set time zone 'UTC'")
            with conn, conn.cursor(name=f"interval_rows_{name}") as cur:
                cur.itersize = _FETCH_ROWS
                cur.execute(sql.SQL("select * from {}{}").format(source, where), params)
                yield from _record_batches(cur)

    return int(rows), schema, batches


def mart_location(settings: Settings, name: str) -> Path:
    """Where the mart lives (for messages and records): its Parquet file or ``postgresql:host:port/db/schema.name``."""
    if settings.warehouse.target == "postgres":
        pg = settings.warehouse.postgres
        return Path(f"postgresql:{pg.host}:{pg.port}") / pg.dbname / f"{pg.schema_name}.{name}"
    if settings.warehouse.target == "spark":
        spark = settings.warehouse.spark
        return Path(f"spark:{spark.host}:{spark.port}") / f"{spark.schema_name}.{name}"
    return settings.marts / f"{name}.parquet"


def _read_parquet(path: Path, columns: Sequence[str] | None) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise MissingMartError(f"No mart at {path}: run the transform stage (dbt build) first.")
    return pd.read_parquet(path, columns=list(columns) if columns is not None else None)


def _mart_query(pg: PostgresSettings, name: str, columns: Sequence[str] | None) -> Any:
    """``select <columns> from "schema"."name" order by <the model's order>``, identifiers quoted by the driver."""
    from psycopg2 import sql

    select = sql.SQL("*") if columns is None else sql.SQL(", ").join(map(sql.Identifier, columns))
    query = sql.SQL("select {} from {}").format(select, table(pg.schema_name, name))
    if name in MART_ORDER:
        keys = [
            sql.SQL('{} collate "C"').format(sql.Identifier(key)) if bytewise else sql.Identifier(key)
            for key, bytewise in MART_ORDER[name]
        ]
        query = sql.SQL("{} order by {}").format(query, sql.SQL(", ").join(keys))
    return query


def _read_postgres(pg: PostgresSettings, name: str, columns: Sequence[str] | None) -> pd.DataFrame:
    """Stream the mart through a server-side cursor into Arrow (typed by column OID), then to pandas."""
    import pyarrow as pa

    with connect(pg) as conn:
        _require_relation(conn, pg, name)
        with conn, conn.cursor() as cur:
            cur.execute("set time zone 'UTC'")
        with conn, conn.cursor(name=f"read_mart_{name}") as cur:
            cur.itersize = _FETCH_ROWS
            cur.execute(_mart_query(pg, name, columns))
            batches = list(_record_batches(cur))
            schema = _arrow_schema(cur.description)
    return pa.Table.from_batches(batches, schema=schema).to_pandas()


def relation_exists(conn: Any, schema: str, name: str) -> bool:
    """Whether the table or view ``schema.name`` exists (names compared exactly, as quoted identifiers)."""
    with conn, conn.cursor() as cur:
        cur.execute("select to_regclass(format('%%I.%%I', %s::text, %s::text)) is not null", (schema, name))
        (found,) = cur.fetchone()
    return bool(found)


def _require_relation(conn: Any, pg: PostgresSettings, name: str) -> None:
    if not relation_exists(conn, pg.schema_name, name):
        raise MissingMartError(
            f"No mart {pg.schema_name}.{name} in PostgreSQL database {pg.dbname!r} on {pg.host}:{pg.port}: run "
            "the transform stage (dbt build --target postgres) first."
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


def publish_embeddings(settings: Settings, frame: pd.DataFrame, *, rebuilt: bool = False) -> int:
    """Mirror the encoder's embeddings table into the warehouse the Feast offline store reads; rows written.

    A no-op for the DuckDB warehouse (Feast reads the Parquet file itself). For PostgreSQL,
    ``<schema>.item_text_embedding`` is made to hold exactly the rows of ``frame``, keyed by
    ``(item_id, content_hash, event_timestamp)``: rows it lacks are copied in, rows ``frame`` lacks are
    deleted, all in one transaction, so a re-run changes nothing. ``rebuilt=True`` (the Parquet cache was
    started from scratch, e.g. for a new checkpoint) replaces every row, since vectors of known keys may differ.
    """
    if settings.warehouse.target == "spark":
        raise TransformError(SPARK_UNREAD.format(what="publishing the item embeddings"))
    if settings.warehouse.target != "postgres":
        return 0
    from psycopg2 import sql

    pg = settings.warehouse.postgres
    target, key = table(pg.schema_name, EMBEDDINGS_TABLE), sql.SQL(_KEY_SQL)
    with connect(pg) as conn, conn, conn.cursor() as cur:
        cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(pg.schema_name)))
        cur.execute(
            sql.SQL(
                "create table if not exists {} (item_id bigint not null, content_hash text not null, "
                "embedding real[] not null, event_timestamp timestamptz not null, "
                "primary key (item_id, content_hash, event_timestamp))"
            ).format(target)
        )
        cur.execute(sql.SQL("lock table {} in exclusive mode").format(target))
        keys = _row_keys(frame)
        if rebuilt:
            cur.execute(sql.SQL("truncate {}").format(target))
            stored: set[tuple[int, str, int]] = set()
        else:
            cur.execute(sql.SQL("select {} from {}").format(key, target))
            stored = set(cur.fetchall())
        gone = stored - set(keys)
        if gone:
            cur.execute(
                sql.SQL(
                    "delete from {} where ({}) in (select * from unnest(%s::bigint[], %s::text[], %s::bigint[]))"
                ).format(target, key),
                tuple(map(list, zip(*gone, strict=True))),
            )
        missing = [i for i, row_key in enumerate(keys) if row_key not in stored]
        if missing:
            cur.copy_expert(
                sql.SQL(
                    "copy {} (item_id, content_hash, embedding, event_timestamp) from stdin with (format csv)"
                ).format(target),
                _embeddings_csv(frame.iloc[missing]),
            )
    return len(missing)


def _row_keys(frame: pd.DataFrame) -> list[tuple[int, str, int]]:
    """``(item_id, content_hash, event_timestamp in µs since the epoch)`` per row."""
    import pandas as pd

    micros = pd.to_datetime(frame["event_timestamp"], utc=True).astype("datetime64[us, UTC]").astype("int64")
    item_ids, hashes = frame["item_id"].astype("int64").tolist(), frame["content_hash"].astype(str).tolist()
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
