"""The PostgreSQL warehouse target: connection config and loading raw lake partitions into ``raw.<table>``.

PostgreSQL cannot read Parquet, so before ``dbt build --target postgres`` the raw partitions are copied into
tables of the raw schema with the contract's columns (docs/contracts.md). Each partition is replaced as a
unit, in one transaction: its rows (``_interval_start`` = the partition day) are deleted, then the file is
streamed in with ``COPY``. A partition missing from the lake (e.g. moved to quarantine by a gate) has its
rows removed, so the raw tables mirror the lake and a re-run of a day yields the same rows.

Every load records the file's fingerprint (size and modification time) in ``{raw_schema}._loaded_partitions``,
so :func:`sync_raw` (what the pipeline's transform stage calls) copies only partitions that are new or were
rewritten since they were loaded, and removes those gone from the lake.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, SecretStr

from recsys.errors import TransformError

if TYPE_CHECKING:
    from recsys.config import Settings

RAW_TABLES = ("events", "users", "items")
LOADED_TABLE = "_loaded_partitions"  # per raw table and day: the fingerprint of the file last loaded
# Column types of the raw tables; the Arrow types they hold are in docs/contracts.md ("Raw Parquet schemas").
RAW_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "events": (
        ("event_id", "text"), ("user_id", "bigint"), ("item_id", "bigint"), ("event_type", "text"),
        ("value", "double precision"), ("session_id", "text"), ("position", "integer"),
        ("occurred_at", "timestamptz"), ("_interval_start", "timestamptz"),
    ),
    "users": (
        ("user_id", "bigint"), ("created_at", "timestamptz"), ("updated_at", "timestamptz"), ("country", "text"),
        ("age_band", "text"), ("_interval_start", "timestamptz"),
    ),
    "items": (
        ("item_id", "bigint"), ("title", "text"), ("body", "text"), ("category", "text"), ("tags", "text[]"),
        ("published_at", "timestamptz"), ("updated_at", "timestamptz"), ("_interval_start", "timestamptz"),
    ),
}  # fmt: skip


class PostgresWarehouse(BaseModel):
    """Where ``dbt build --target postgres`` runs: the server, database and the raw and mart schemas."""

    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    password: SecretStr | None = None
    dbname: str = "recsys"
    schema_name: str = Field("analytics", description="Schema of the dbt models (staging views, marts).")
    raw_schema: str = Field("raw", description="Schema of the raw tables load_raw fills from the lake.")
    sslmode: str = Field(
        "prefer", description="libpq sslmode of the recsys connections and the Feast offline store (e.g. require)."
    )

    @property
    def password_value(self) -> str:
        """The password as plain text ('' when unset: trust or peer authentication)."""
        return self.password.get_secret_value() if self.password else ""

    def qualified(self, name: str) -> str:
        """``"schema"."name"``: a model or table in the schema of the dbt models."""
        return f'"{self.schema_name}"."{name}"'

    def dbt_env(self) -> dict[str, str]:
        """The env vars ``dbt/profiles.yml`` reads for the postgres target."""
        return {
            "RECSYS_PG_HOST": self.host,
            "RECSYS_PG_PORT": str(self.port),
            "RECSYS_PG_USER": self.user,
            "RECSYS_PG_PASSWORD": self.password_value,
            "RECSYS_PG_DBNAME": self.dbname,
            "RECSYS_PG_SCHEMA": self.schema_name,
        }

    @contextmanager
    def connect(self) -> Iterator[Any]:
        """A psycopg2 connection (closed afterwards); a clear error when the server cannot be reached."""
        import psycopg2

        try:
            conn = psycopg2.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                password=self.password.get_secret_value() if self.password else None,
                dbname=self.dbname,
                sslmode=self.sslmode,
                connect_timeout=10,
            )
        except psycopg2.OperationalError as exc:
            raise TransformError(
                f"Cannot connect to PostgreSQL {self.user}@{self.host}:{self.port}/{self.dbname} ({exc}); "
                "start the server or fix the postgres warehouse settings."
            ) from exc
        try:
            yield conn
        finally:
            conn.close()


def postgres_warehouse(settings: Settings) -> PostgresWarehouse:
    """The ``postgres`` section of ``settings`` as a typed :class:`PostgresWarehouse`."""
    return PostgresWarehouse.model_validate(settings.postgres)


def lake_partitions(lake: Path, table: str) -> dict[date, Path]:
    """``{partition day: file}`` of one raw table in the lake."""
    found = {}
    for path in sorted((lake / "raw" / table).glob("dt=*/part-0.parquet")):
        found[date.fromisoformat(path.parent.name.removeprefix("dt="))] = path
    return found


def load_raw(
    lake: Path, warehouse: PostgresWarehouse, days: Iterable[date] | None = None, tables: Iterable[str] = RAW_TABLES
) -> dict[str, int]:
    """Copy raw lake partitions into ``{raw_schema}.<table>``, replacing each partition; return rows per table.

    ``days=None`` syncs every table with the whole lake (partitions gone from the lake are removed);
    otherwise only the given days are replaced (a day without a partition loses its rows).
    """
    totals: dict[str, int] = {}
    with warehouse.connect() as conn:
        for table in tables:
            present = _prepare_raw_table(conn, warehouse, lake, table)
            wanted = sorted(present) if days is None else sorted(set(days))
            if days is None:
                _drop_partitions_not_in(conn, warehouse.raw_schema, table, set(present))
            totals[table] = sum(
                _replace_partition(conn, warehouse.raw_schema, table, day, present.get(day)) for day in wanted
            )
    return totals


def _prepare_raw_table(conn: Any, warehouse: PostgresWarehouse, lake: Path, table: str) -> dict[date, Path]:
    """Check ``table`` is a raw table, create it if missing; return its lake partitions by day."""
    if table not in RAW_COLUMNS:
        raise TransformError(f"Unknown raw table {table!r}: expected one of {list(RAW_COLUMNS)}.")
    _create_table(conn, warehouse.raw_schema, table)
    return lake_partitions(lake, table)


def sync_raw(lake: Path, warehouse: PostgresWarehouse, tables: Iterable[str] = RAW_TABLES) -> dict[str, int]:
    """Make the raw tables mirror the lake, copying only what changed; return the partitions copied per table.

    A partition is copied when it is new or its file was rewritten since it was loaded (size or modification
    time differ from the recorded fingerprint); rows of partitions gone from the lake are removed.
    """
    copied: dict[str, int] = {}
    with warehouse.connect() as conn:
        for table in tables:
            present = _prepare_raw_table(conn, warehouse, lake, table)
            loaded = _loaded_fingerprints(conn, warehouse.raw_schema, table)
            _drop_partitions_not_in(conn, warehouse.raw_schema, table, set(present))
            stale = [day for day, path in sorted(present.items()) if loaded.get(day) != _fingerprint(path)]
            for day in stale:
                _replace_partition(conn, warehouse.raw_schema, table, day, present[day])
            copied[table] = len(stale)
    return copied


def _fingerprint(path: Path) -> str:
    """What identifies one written version of a partition file (files are replaced whole, by rename)."""
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def _loaded_fingerprints(conn: Any, schema: str, table: str) -> dict[date, str]:
    with conn, conn.cursor() as cur:
        cur.execute(f'select day, fingerprint from "{schema}"."{LOADED_TABLE}" where table_name = %s', (table,))
        return dict(cur.fetchall())


def _create_table(conn: Any, schema: str, table: str) -> None:
    columns = ", ".join(f'"{name}" {sql_type}' for name, sql_type in RAW_COLUMNS[table])
    with conn, conn.cursor() as cur:
        cur.execute(f'create schema if not exists "{schema}"')
        cur.execute(f'create table if not exists "{schema}"."{table}" ({columns})')
        cur.execute(
            f'create table if not exists "{schema}"."{LOADED_TABLE}" '
            "(table_name text, day date, fingerprint text not null, primary key (table_name, day))"
        )


def _day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _drop_partitions_not_in(conn: Any, schema: str, table: str, keep: set[date]) -> None:
    with conn, conn.cursor() as cur:
        cur.execute(
            f'delete from "{schema}"."{table}" where not (_interval_start = any(%s))',
            ([_day_start(d) for d in keep],),
        )
        cur.execute(
            f'delete from "{schema}"."{LOADED_TABLE}" where table_name = %s and not (day = any(%s))',
            (table, sorted(keep)),
        )


def _replace_partition(conn: Any, schema: str, table: str, day: date, path: Path | None) -> int:
    """Delete the day's rows and COPY its file in, in one transaction; returns the rows loaded."""
    names = [name for name, _ in RAW_COLUMNS[table]]
    with conn, conn.cursor() as cur:
        cur.execute(f'delete from "{schema}"."{table}" where _interval_start = %s', (_day_start(day),))
        cur.execute(f'delete from "{schema}"."{LOADED_TABLE}" where table_name = %s and day = %s', (table, day))
        if path is None:
            return 0
        fingerprint = _fingerprint(path)
        data, rows = _as_csv(path, table, names)
        column_list = ", ".join(f'"{n}"' for n in names)
        cur.copy_expert(f'copy "{schema}"."{table}" ({column_list}) from stdin with (format csv)', data)
        cur.execute(
            f'insert into "{schema}"."{LOADED_TABLE}" (table_name, day, fingerprint) values (%s, %s, %s)',
            (table, day, fingerprint),
        )
        return rows


def _as_csv(path: Path, table: str, names: list[str]) -> tuple[io.BytesIO, int]:
    """The partition as CSV for COPY: nulls empty and unquoted, every value quoted, lists as array literals."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    data = pq.read_table(path)
    missing = [n for n in names if n not in data.column_names]
    if missing:
        raise TransformError(
            f"{path} lacks column(s) {missing} of the raw {table} contract: the raw gate should have "
            "quarantined it; re-extract the interval."
        )
    data = data.select(names)
    if "tags" in names:
        literal = pa.array([_pg_array(v) for v in data.column("tags").to_pylist()], type=pa.string())
        data = data.set_column(names.index("tags"), "tags", literal)
    out = io.BytesIO()
    options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
    pacsv.write_csv(data, out, write_options=options)
    out.seek(0)
    return out, data.num_rows


def _pg_array(values: list[str | None] | None) -> str | None:
    """A PostgreSQL array literal of text values (``{"a","b"}``), or None."""
    if values is None:
        return None
    items = ("NULL" if v is None else '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(items) + "}"
