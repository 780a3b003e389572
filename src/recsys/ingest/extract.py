"""Extract one data interval of a source table into an atomic, idempotent raw Parquet partition.

Rows are streamed from the source with a server-side cursor in batches (bounded memory), in primary-key
order (so a re-run writes identical bytes), written to a temporary file beside the partition and renamed
into place. Rows that do not fit the raw schema are written to a quarantine file with the reason.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq
from sqlalchemy import MetaData, Table, select
from sqlalchemy.exc import DBAPIError, NoSuchTableError, OperationalError

from recsys import lake
from recsys.errors import ExtractError, IntervalError, SourceUnavailableError
from recsys.lake import EXTRA, INTERVAL_COLUMN, KEYS, RAW_SCHEMAS, TS
from recsys.sources import mongo
from recsys.sources.db import describe_url, first_line, source_engine

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from recsys.config import Settings
    from recsys.progress import Progress

log = logging.getLogger(__name__)

# Per schema: numeric column -> True for floating point, False for integer (text numbers from a drifted
# source column still parse).
NUMERIC = {
    schema: {
        f.name: pa.types.is_floating(f.type)
        for f in schema
        if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
    }
    for schema in lake.RAW_SCHEMAS.values()
}


@dataclass(frozen=True)
class ExtractResult:
    """What one interval extraction wrote."""

    table: str
    partition: Path
    rows: int
    quarantined: int


def _live_table(engine: Engine, table: str) -> Table:
    """The source table as it is now (reflected), so a drifted schema is seen rather than assumed away."""
    try:
        return Table(table, MetaData(), autoload_with=engine)
    except NoSuchTableError:
        raise ExtractError(f"source table {table!r} does not exist: run `recsys sources init`.") from None


Batch = tuple[list[str], list[tuple[Any, ...]]]  # column names, rows


def _sql_batches(settings: Settings, table: str, start: datetime, end: datetime, batch: int) -> Iterator[Batch]:
    engine = source_engine(settings, retries=1)  # extract_interval retries the whole interval
    try:
        tbl = _live_table(engine, table)
        for needed in (INTERVAL_COLUMN[table], *KEYS[table]):
            if needed not in tbl.c:
                raise ExtractError(
                    f"source table {table} has no {needed!r} column (it has {sorted(tbl.c.keys())}): the source "
                    "schema drifted; restore or map the column before extracting."
                )
        col = tbl.c[INTERVAL_COLUMN[table]]
        query = select(tbl).where(col >= lake.naive_utc(start), col < lake.naive_utc(end))
        query = query.order_by(*(tbl.c[k] for k in KEYS[table]))
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
            columns = list(result.keys())
            for part in result.partitions(batch):
                yield columns, [tuple(row) for row in part]
    finally:
        engine.dispose()


def _mongo_batches(settings: Settings, table: str, start: datetime, end: datetime, batch: int) -> Iterator[Batch]:
    contract = [n for n in RAW_SCHEMAS[table].names if n != EXTRA]
    db = mongo.mongo_database(settings)
    try:
        docs = mongo.iter_interval(db, table, INTERVAL_COLUMN[table], lake.naive_utc(start), lake.naive_utc(end), batch)
        chunk: list[dict[str, Any]] = []
        for doc in docs:
            chunk.append(doc)
            if len(chunk) >= batch:
                yield _columns_of(chunk, contract)
                chunk = []
        if chunk:
            yield _columns_of(chunk, contract)
    finally:
        db.client.close()


def _columns_of(docs: list[dict[str, Any]], contract: list[str]) -> Batch:
    """Documents as rows over the contract's fields plus any others they carry (schemaless sources drift too)."""
    extra = sorted({k for d in docs for k in d} - set(contract))
    columns = contract + extra
    return columns, [tuple(d.get(c) for c in columns) for d in docs]


def source_batches(settings: Settings, table: str, start: datetime, end: datetime, batch: int) -> Iterator[Batch]:
    """Batches of ``table`` rows whose interval column is in ``[start, end)``, from wherever the config keeps them."""
    if _uses_mongo(settings, table):
        return _mongo_batches(settings, table, start, end, batch)
    return _sql_batches(settings, table, start, end, batch)


CONVERSION_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError)


def _to_record_batch(batch: Batch, schema: pa.Schema, quarantine: list[dict[str, Any]]) -> pa.RecordBatch:
    """Convert a batch column by column; if that fails, row by row, quarantining each bad row with its reason."""
    try:
        return _columnar(batch, schema)
    except CONVERSION_ERRORS:
        columns, rows = batch
        good = []
        for row in (_conform(dict(zip(columns, r, strict=True)), schema) for r in rows):
            try:
                pa.RecordBatch.from_pylist([row], schema=schema)
                good.append(row)
            except CONVERSION_ERRORS as exc:
                quarantine.append({"reason": f"{type(exc).__name__}: {exc}", "row": row})
        return pa.RecordBatch.from_pylist(good, schema=schema)


def _columnar(batch: Batch, schema: pa.Schema) -> pa.RecordBatch:
    """The fast path: one typed Arrow array per contract column; missing columns null, others into ``_extra``."""
    columns, rows = batch
    index = {name: i for i, name in enumerate(columns)}
    values = list(zip(*rows, strict=True)) if rows else [() for _ in columns]
    extras = [c for c in columns if c not in schema.names]
    arrays = []
    for field in schema:
        if field.name == EXTRA:
            arrays.append(pa.array(_extra_json(rows, [(c, index[c]) for c in extras]), type=pa.string()))
        elif field.name in index:
            column = values[index[field.name]]
            if field.name == "tags":  # JSON text from drivers that do not decode JSON columns
                column = tuple(json.loads(v) if isinstance(v, str) else v for v in column)
            arrays.append(pa.array(column, type=field.type))
        else:
            arrays.append(pa.nulls(len(rows), type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _extra_json(rows: list[tuple[Any, ...]], extras: list[tuple[str, int]]) -> list[str | None]:
    if not extras:
        return [None] * len(rows)
    return [json.dumps({name: row[i] for name, i in extras}, default=str, sort_keys=True) for row in rows]


def _conform(row: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """Contract columns (missing ones as null) plus ``_extra``: a JSON object of any columns the contract lacks."""
    out = {name: row.get(name) for name in schema.names if name != EXTRA}
    if isinstance(out.get("tags"), str):  # JSON text from drivers that do not decode JSON columns
        with contextlib.suppress(json.JSONDecodeError):  # else left as text: quarantined with the reason
            out["tags"] = json.loads(out["tags"])
    for name, value in out.items():  # a column retyped to text at the source: numbers in text still parse
        if isinstance(value, str) and name in NUMERIC[schema]:
            with contextlib.suppress(ValueError):
                out[name] = float(value) if NUMERIC[schema][name] else int(value)
    extra = {k: v for k, v in row.items() if k not in out}
    out[EXTRA] = json.dumps(extra, default=str, sort_keys=True) if extra else None
    return out


def _write_quarantine(path: Path, bad: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w") as fh:
        for entry in bad:
            fh.write(json.dumps(entry, default=str) + "\n")
    os.replace(tmp, path)


def extract_interval(
    settings: Settings, table: str, start: datetime, end: datetime, batch_size: int = 50_000
) -> ExtractResult:
    """Extract ``[start - overlap, end)`` of ``table`` into the partition keyed by ``start``; replaces it.

    A source that refuses or loses the connection is retried as ``settings.retries.source`` says, the whole
    interval each time; the partition appears only when one try has read every row. After the last try
    :class:`SourceUnavailableError` names the source and what to do, and nothing was written.
    """
    if table not in RAW_SCHEMAS:
        raise ExtractError(f"unknown source table {table!r}; expected one of {sorted(RAW_SCHEMAS)}.")
    try:
        start, end = lake.check_interval(start, end)
    except IntervalError as exc:
        raise ExtractError(str(exc)) from exc
    target = lake.partition_path(settings.lake, table, start)
    policy = settings.retries.source
    delays = policy.delays()
    for attempt in range(1, policy.attempts + 1):
        try:
            rows, quarantine = _write_partition(settings, table, start, end, target, batch_size)
            break
        except Exception as exc:
            if not _source_lost(exc):
                raise
            log.warning(
                "extract %s %s: source %s lost (attempt %d/%d): %s",
                table, f"{start:%Y-%m-%d}", _source_name(settings, table), attempt, policy.attempts, first_line(exc),
            )  # fmt: skip
            if attempt == policy.attempts:
                raise _gave_up(settings, table, start, end, policy.attempts, exc) from exc
            time.sleep(delays[attempt - 1])
    qpath = lake.quarantined_rows_path(settings.lake, table, start)
    if quarantine:
        _write_quarantine(qpath, quarantine)
        log.warning("%s %s: quarantined %d rows -> %s", table, f"{start:%Y-%m-%d}", len(quarantine), qpath)
    elif qpath.exists():
        shutil.rmtree(qpath.parent)  # a re-run after a fix clears the stale quarantine of this interval
    log.info("extracted %s [%s, %s): %d rows -> %s", table, start, end, rows, target)
    return ExtractResult(table, target, rows, len(quarantine))


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary files of ``target`` whose writer is gone: a try killed mid-write (SIGKILL, a lost
    Celery worker) cannot clean up after itself, so the next try does. A temporary file names its writer's pid
    (``.part-0.parquet.tmp-PID``); one of a live process on this machine is kept."""
    removed = []
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        pid = stale.name.rpartition("-")[2]
        if pid.isdigit() and not _process_alive(int(pid)):
            stale.unlink(missing_ok=True)
            removed.append(stale)
            log.warning("removed %s, left by a writer that was killed", stale)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_partition(
    settings: Settings, table: str, start: datetime, end: datetime, target: Path, batch_size: int
) -> tuple[int, list[dict[str, Any]]]:
    """One try: every row of the interval into a temporary file, renamed onto ``target`` only when complete."""
    schema = lake.partition_schema(table)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    remove_stale_temporaries(target)
    quarantine: list[dict[str, Any]] = []
    rows = 0
    interval_col = pa.scalar(start, type=TS)
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            batches = source_batches(settings, table, start - settings.late_data_overlap, end, batch_size)
            for batch in batches:
                rb = _to_record_batch(batch, RAW_SCHEMAS[table], quarantine)
                stamp = pa.array([interval_col] * rb.num_rows, type=TS)
                writer.write_batch(pa.RecordBatch.from_arrays([*rb.columns, stamp], schema=schema))
                rows += rb.num_rows
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows, quarantine


# MySQL/MariaDB error codes of a lost, refused or contended connection: worth another try. Any other error
# (an unknown column, access denied) fails at once with the server's own message.
MYSQL_TRANSIENT = frozenset({1040, 1053, 1152, 1153, 1158, 1159, 1160, 1161, 1205, 1213, 2002, 2003, 2006, 2013, 2055})
SQLITE_TRANSIENT = ("database is locked", "unable to open database file", "disk i/o error")


def _source_lost(exc: BaseException) -> bool:
    """A refused, dropped or timed-out source connection (worth a retry), not a bug or a schema problem."""
    if isinstance(exc, SourceUnavailableError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        code = next(iter(getattr(exc.orig, "args", ())), None)
        if isinstance(code, int):  # PyMySQL / mysqlclient: (code, message)
            return code in MYSQL_TRANSIENT
        return any(marker in str(exc.orig).lower() for marker in SQLITE_TRANSIENT)
    if type(exc).__module__.startswith("pymongo"):
        from pymongo.errors import ConnectionFailure

        return isinstance(exc, ConnectionFailure)
    return False


def _uses_mongo(settings: Settings, table: str) -> bool:
    return (table, "mongo") in {("items", settings.items_source), ("events", settings.events_source)}


def _source_name(settings: Settings, table: str) -> str:
    """The source of ``table`` for messages: its URL without the password."""
    if _uses_mongo(settings, table):
        return f"MongoDB {mongo.describe(settings)}"
    assert settings.source_url is not None
    return f"database {describe_url(settings.source_url.get_secret_value())}"


def _gave_up(
    settings: Settings, table: str, start: datetime, end: datetime, attempts: int, exc: BaseException
) -> SourceUnavailableError:
    setting = "RECSYS_MONGO_URL" if _uses_mongo(settings, table) else "RECSYS_SOURCE_URL"
    cause = exc.__cause__ if isinstance(exc, SourceUnavailableError) and exc.__cause__ else exc  # the driver's own
    return SourceUnavailableError(
        f"extracting {table} [{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) UTC failed: source "
        f"{_source_name(settings, table)} was unreachable or dropped the connection on each of {attempts} tries "
        f"(last: {first_line(cause)}). No partition was written for this interval. Start the source (and check "
        f"that {setting} names the right host, port and database), then re-run the interval: the re-run writes "
        "the same partition as a run without the outage. More tries: retries.source.attempts "
        "(RECSYS_RETRIES__SOURCE__ATTEMPTS)."
    )


def extract_all(settings: Settings, start: datetime, end: datetime) -> dict[str, ExtractResult]:
    """Extract every source table for one interval."""
    return {table: extract_interval(settings, table, start, end) for table in lake.RAW_TABLES}


def backfill(
    settings: Settings, first: date, last: date, force: bool = False, progress: Progress | None = None
) -> list[ExtractResult]:
    """Extract each day in ``[first, last]``; resumable: days whose partitions all exist are skipped.

    ``progress(1)`` is called after each day, extracted or skipped (``len(lake.days_between(first, last))`` calls).
    """
    days = lake.days_between(first, last)
    results: list[ExtractResult] = []
    for n, day in enumerate(days, 1):
        start, end = lake.day_interval(day)
        done = all(lake.partition_path(settings.lake, t, start).exists() for t in lake.RAW_TABLES)
        if done and not force:
            log.info("backfill %d/%d %s: already extracted, skipped", n, len(days), day)
        else:
            results.extend(extract_all(settings, start, end).values())
            log.info("backfill %d/%d %s: done", n, len(days), day)
        if progress is not None:
            progress(1)
    return results
