"""The PostgreSQL warehouse target: connecting, and loading raw lake partitions into ``{raw_schema}.<table>``.

PostgreSQL cannot read Parquet, so before ``dbt build --target postgres`` the raw partitions are copied into
tables of the raw schema whose columns are derived from the lake's Arrow schema (``recsys.lake``). Each
partition is replaced as a unit, in one transaction: its rows (``_interval_start`` = the partition day) are
deleted, then the file is streamed in with ``COPY``. A partition missing from the lake (e.g. moved to
quarantine by a gate) has its rows removed, so the raw tables mirror the lake and a re-run of a day yields
the same rows.

Every load records the file's fingerprint (size and modification time) in ``{raw_schema}._loaded_partitions``,
so :func:`sync_raw` (what the pipeline's transform stage calls) copies only partitions that are new or were
rewritten since they were loaded, and removes those gone from the lake.

Schema and table names come from config: they are composed with ``psycopg2.sql.Identifier``, never pasted
into the SQL text; values are always parameters.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys import lake
from recsys.errors import TransformError

if TYPE_CHECKING:
    from psycopg2.sql import Composed

    from recsys.config import PostgresSettings

LOADED_TABLE = "_loaded_partitions"  # per raw table and day: the fingerprint of the file last loaded
_COPY_ROWS = 100_000  # rows per COPY statement when loading a partition (bounds the loader's memory)


@contextmanager
def connect(pg: PostgresSettings) -> Iterator[Any]:
    """A psycopg2 connection to the warehouse (closed afterwards); a clear error when it cannot be reached."""
    import psycopg2

    try:
        conn = psycopg2.connect(**pg.connect_kwargs(), connect_timeout=10)
    except psycopg2.OperationalError as exc:
        raise TransformError(
            f"Cannot connect to PostgreSQL {pg.describe()} ({exc}); start the server or fix the "
            "warehouse.postgres settings."
        ) from exc
    try:
        yield conn
    finally:
        conn.close()


def table(schema: str, name: str) -> Composed:
    """``"schema"."name"`` as a composable SQL identifier (quoted by the driver)."""
    from psycopg2 import sql

    return sql.SQL(".").join([sql.Identifier(schema), sql.Identifier(name)])


def load_raw(
    lake_dir: Path, pg: PostgresSettings, days: Iterable[date] | None = None, tables: Iterable[str] = lake.RAW_TABLES
) -> dict[str, int]:
    """Copy raw lake partitions into ``{raw_schema}.<table>``, replacing each partition; return rows per table.

    ``days=None`` syncs every table with the whole lake (partitions gone from the lake are removed);
    otherwise only the given days are replaced (a day without a partition loses its rows).
    """
    totals: dict[str, int] = {}
    with connect(pg) as conn:
        for name in tables:
            present = _prepare_raw_table(conn, pg.raw_schema, lake_dir, name)
            wanted = sorted(present) if days is None else sorted(set(days))
            if days is None:
                _drop_partitions_not_in(conn, pg.raw_schema, name, set(present))
            totals[name] = sum(_replace_partition(conn, pg.raw_schema, name, day, present.get(day)) for day in wanted)
    return totals


def sync_raw(lake_dir: Path, pg: PostgresSettings, tables: Iterable[str] = lake.RAW_TABLES) -> dict[str, int]:
    """Make the raw tables mirror the lake, copying only what changed; return the partitions copied per table.

    A partition is copied when it is new or its file was rewritten since it was loaded (size or modification
    time differ from the recorded fingerprint); rows of partitions gone from the lake are removed.
    """
    copied: dict[str, int] = {}
    with connect(pg) as conn:
        for name in tables:
            present = _prepare_raw_table(conn, pg.raw_schema, lake_dir, name)
            loaded = _loaded_fingerprints(conn, pg.raw_schema, name)
            _drop_partitions_not_in(conn, pg.raw_schema, name, set(present))
            stale = [day for day, path in sorted(present.items()) if loaded.get(day) != _fingerprint(path)]
            for day in stale:
                _replace_partition(conn, pg.raw_schema, name, day, present[day])
            copied[name] = len(stale)
    return copied


def _prepare_raw_table(conn: Any, schema: str, lake_dir: Path, name: str) -> dict[date, Path]:
    """Check ``name`` is a raw table, create or widen it to the contract; return its lake partitions by day."""
    if name not in lake.RAW_TABLES:
        raise TransformError(f"Unknown raw table {name!r}: expected one of {list(lake.RAW_TABLES)}.")
    _create_table(conn, schema, name)
    return lake.partitions(lake_dir, name)


def _fingerprint(path: Path) -> str:
    """What identifies one written version of a partition file (files are replaced whole, by rename)."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _loaded_fingerprints(conn: Any, schema: str, name: str) -> dict[date, str]:
    from psycopg2 import sql

    query = sql.SQL("select day, fingerprint from {} where table_name = %s").format(table(schema, LOADED_TABLE))
    with conn, conn.cursor() as cur:
        cur.execute(query, (name,))
        return dict(cur.fetchall())


def _create_table(conn: Any, schema: str, name: str) -> None:
    """Create the raw table from the lake contract, and add any contract column an older table lacks."""
    from psycopg2 import sql

    target = table(schema, name)
    columns = [
        sql.SQL("{} {}").format(sql.Identifier(col), sql.SQL(pg_type)) for col, pg_type in lake.postgres_columns(name)
    ]
    with conn, conn.cursor() as cur:
        cur.execute(sql.SQL("create schema if not exists {}").format(sql.Identifier(schema)))
        cur.execute(sql.SQL("create table if not exists {} ({})").format(target, sql.SQL(", ").join(columns)))
        for column in columns:  # a table created by an older contract gains the new columns (null in old rows)
            cur.execute(sql.SQL("alter table {} add column if not exists {}").format(target, column))
        cur.execute(
            sql.SQL(
                "create table if not exists {} "
                "(table_name text, day date, fingerprint text not null, primary key (table_name, day))"
            ).format(table(schema, LOADED_TABLE))
        )


def _drop_partitions_not_in(conn: Any, schema: str, name: str, keep: set[date]) -> None:
    from psycopg2 import sql

    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("delete from {} where not ({} = any(%s))").format(
                table(schema, name), sql.Identifier(lake.INTERVAL_START)
            ),
            ([lake.day_start(d) for d in keep],),
        )
        cur.execute(
            sql.SQL("delete from {} where table_name = %s and not (day = any(%s))").format(table(schema, LOADED_TABLE)),
            (name, sorted(keep)),
        )


def _replace_partition(conn: Any, schema: str, name: str, day: date, path: Path | None) -> int:
    """Delete the day's rows and COPY its file in, in one transaction; returns the rows loaded."""
    from psycopg2 import sql

    columns = [col for col, _ in lake.postgres_columns(name)]
    target, loaded = table(schema, name), table(schema, LOADED_TABLE)
    with conn, conn.cursor() as cur:
        cur.execute(
            sql.SQL("delete from {} where {} = %s").format(target, sql.Identifier(lake.INTERVAL_START)),
            (lake.day_start(day),),
        )
        cur.execute(sql.SQL("delete from {} where table_name = %s and day = %s").format(loaded), (name, day))
        if path is None:
            return 0
        fingerprint = _fingerprint(path)
        copy = sql.SQL("copy {} ({}) from stdin with (format csv)").format(
            target, sql.SQL(", ").join(map(sql.Identifier, columns))
        )
        rows = 0
        for data, n in _as_csv(path, name, columns):  # one COPY per record batch: memory stays one batch
            cur.copy_expert(copy, data)
            rows += n
        cur.execute(
            sql.SQL("insert into {} (table_name, day, fingerprint) values (%s, %s, %s)").format(loaded),
            (name, day, fingerprint),
        )
        return rows


def _as_csv(path: Path, name: str, columns: list[str]) -> Iterator[tuple[io.BytesIO, int]]:
    """The partition as CSV for COPY, one record batch at a time: nulls empty and unquoted, every value quoted,
    lists as array literals."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    with pq.ParquetFile(path, pre_buffer=False) as parquet:
        missing = [n for n in columns if n not in parquet.schema_arrow.names]
        if missing:
            raise TransformError(
                f"{path} lacks column(s) {missing} of the raw {name} contract: the raw gate should have "
                "quarantined it; re-extract the interval."
            )
        for batch in parquet.iter_batches(batch_size=_COPY_ROWS, columns=columns, use_threads=False):
            data = pa.Table.from_batches([batch]).select(columns)
            for i, field in enumerate(data.schema):
                if pa.types.is_list(field.type):
                    literal = pa.array([_pg_array(v) for v in data.column(i).to_pylist()], type=pa.string())
                    data = data.set_column(i, field.name, literal)
            out = io.BytesIO()
            pacsv.write_csv(
                data, out, write_options=pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
            )
            out.seek(0)
            yield out, data.num_rows


def _pg_array(values: list[str | None] | None) -> str | None:
    """A PostgreSQL array literal of text values (``{"a","b"}``), or None."""
    if values is None:
        return None
    items = ("NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(items) + "}"
