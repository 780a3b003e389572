"""Feast glue: one programmatic FeatureStore per Settings, apply, materialize and feature retrieval.

The store is configured from :class:`recsys.config.Settings` (never from ``feature_store.yaml`` or the
current directory). The definitions are those of ``recsys_repo.py`` in ``settings.feast_repo``, loaded once
per process by path (not imported by name: nothing is added to ``sys.path`` or ``sys.modules``, nothing is
read from the environment), with their batch sources bound to the configured warehouse: DuckDB over the
Parquet marts, or PostgreSQL or Spark over the mart tables (``settings.warehouse.target``).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from recsys.config import Settings
from recsys.errors import FeatureStoreError

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore, FeatureView
    from feast.data_source import DataSource
    from feast.feast_object import FeastObject

log = logging.getLogger(__name__)

PROJECT = "recsys"
ENTITY_KEY_SERIALIZATION_VERSION = 3  # Feast 0.67 deprecates anything below 3
ROW_COLUMN = "_recsys_entity_row"  # added to entity_df so answers come back in the caller's row order
REPO_MODULE = "recsys_repo.py"  # the definitions file of the feature repo (feature_repo/recsys_repo.py)


def offline_store_config(settings: Settings) -> dict[str, Any]:
    """Feast's ``offline_store`` block: DuckDB over the Parquet marts, PostgreSQL or Spark over the mart tables.

    With ``warehouse.target: postgres`` it is the ``warehouse.postgres`` settings section (host, port, dbname, user,
    password, sslmode); ``db_schema`` is the schema of the dbt models, where Feast also creates its
    temporary entity tables. With ``spark`` it is Feast's Spark store with the session of ``warehouse.spark``
    (``spark_conf``: master, the Hive metastore dbt-spark writes to; ``staging_location`` when set).
    """
    if settings.warehouse.target == "spark":
        spark = settings.warehouse.spark
        config: dict[str, Any] = {"type": "spark", "spark_conf": dict(spark.spark_conf)}
        if spark.staging_location:
            config["staging_location"] = spark.staging_location
        return config
    if settings.warehouse.target != "postgres":
        return {"type": "duckdb"}
    warehouse = settings.warehouse.postgres
    return {
        "type": "postgres",
        "host": warehouse.host,
        "port": warehouse.port,
        "database": warehouse.dbname,
        "db_schema": warehouse.schema_name,
        "user": warehouse.user,
        "password": warehouse.password_value,
        "sslmode": warehouse.sslmode,
    }


def repo_config(settings: Settings, *, project: str = PROJECT) -> Any:
    """The Feast ``RepoConfig`` of ``settings``: file registry, DuckDB/PostgreSQL/Spark offline, SQLite/Redis (or
    Redis Cluster) online.

    Both online stores are order-safe: a row older than the stored one for the same entity and view is not
    written (Redis: Feast's own event-time check; SQLite: ``recsys.features.online_sqlite``).
    """
    from feast.repo_config import RepoConfig

    assert settings.feast_registry is not None and settings.online_sqlite_path is not None
    online: dict[str, Any]
    if settings.online_store in ("redis", "redis_cluster"):
        # Feast's Redis store compares event times and skips older rows unless skip_dedup: keep it off.
        # redis_cluster: redis_url lists the startup nodes (host1:6379,host2:6379[,ssl=true]).
        online = {
            "type": "redis",
            "redis_type": settings.online_store,
            "connection_string": settings.redis_url,
            "skip_dedup": False,
        }
    else:
        # Feast's SQLite store would let an older interval overwrite newer rows; ours keeps the newer ones.
        # Imported by name (not only by the class path string) so a bento ships the module (build_context).
        from recsys.features.online_sqlite import ONLINE_STORE_TYPE

        online = {"type": ONLINE_STORE_TYPE, "path": str(settings.online_sqlite_path)}
    return RepoConfig(
        project=project,
        provider="local",
        registry=str(settings.feast_registry),
        offline_store=offline_store_config(settings),
        online_store=online,
        repo_path=settings.feast_repo,
        entity_key_serialization_version=ENTITY_KEY_SERIALIZATION_VERSION,
    )


def feature_store(settings: Settings, *, project: str = PROJECT) -> FeatureStore:
    """A ``feast.FeatureStore`` configured from ``settings`` (creates the local state directories)."""
    from feast import FeatureStore

    assert settings.feast_registry is not None and settings.online_sqlite_path is not None
    settings.feast_registry.parent.mkdir(parents=True, exist_ok=True)
    if settings.online_store == "sqlite":
        settings.online_sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return FeatureStore(repo_path=str(settings.feast_repo), config=repo_config(settings, project=project))
    except Exception as exc:
        raise FeatureStoreError(
            f"Cannot build the Feast store for project {project!r}: {exc}. "
            "Check the feast_registry, online_store and redis_url settings."
        ) from exc


@functools.cache
def _repo_module(repo: Path) -> ModuleType:
    """The definitions module of the feature repo at ``repo``, executed once per process.

    It is loaded by path under a private name and kept out of ``sys.modules``: the ``feast`` CLI imports the same
    file as a top-level module of its own, and each caller here gets fresh objects from its ``definitions``.
    """
    path = repo / REPO_MODULE
    if not (repo / "feature_store.yaml").is_file() or not path.is_file():
        raise FeatureStoreError(
            f"{repo} is not the recsys Feast repo (it needs feature_store.yaml and {REPO_MODULE}): "
            "set RECSYS_FEAST_REPO to the feature_repo/ dir."
        )
    spec = importlib.util.spec_from_file_location("recsys_feature_repo", path)
    assert spec is not None and spec.loader is not None  # a .py file always has a source loader
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise FeatureStoreError(f"Feast definitions {path} failed to import: {exc}") from exc
    return module


def _bound_sources(repo: ModuleType, settings: Settings) -> dict[str, DataSource]:
    """The repo's batch sources at the locations ``settings`` configure (Parquet files or mart tables)."""
    if settings.warehouse.target == "postgres":
        return dict(repo.postgres_sources(settings.warehouse.postgres.schema_name))
    if settings.warehouse.target == "spark":
        return dict(repo.spark_sources(settings.warehouse.spark.schema_name))
    return dict(repo.file_sources(settings.marts, settings.embeddings_path))


def definitions(settings: Settings) -> list[FeastObject]:
    """The Entity, FeatureView and FeatureService objects of ``settings.feast_repo``, their feature views
    reading the configured warehouse (fresh objects on each call)."""
    repo = _repo_module(settings.feast_repo.resolve())
    try:
        objects = repo.definitions(_bound_sources(repo, settings))
    except Exception as exc:
        raise FeatureStoreError(f"Feast definitions in {repo.__file__} failed to build: {exc}") from exc
    return list(objects.values())


def apply(settings: Settings, *, project: str = PROJECT) -> None:
    """Register every definition in ``settings.feast_repo`` and create its online tables (idempotent)."""
    objects = definitions(settings)
    if not objects:
        raise FeatureStoreError(f"No Feast definitions found in {settings.feast_repo / REPO_MODULE}.")
    store = feature_store(settings, project=project)
    try:
        store.apply(objects)
    except Exception as exc:
        raise FeatureStoreError(f"feast apply for project {project!r} failed: {exc}") from exc


def _source_path(view: FeatureView) -> Path | None:
    path = getattr(view.batch_source, "path", None)
    return Path(path) if path and "://" not in path else None


def _source_table(view: FeatureView) -> str | None:
    """The table a PostgreSQL source reads (``"schema"."name"``), None for other sources."""
    options = getattr(view.batch_source, "_postgres_options", None)
    return getattr(options, "_table", None) or None


def _require_sources(settings: Settings, views: list[FeatureView]) -> None:
    missing = [f"{v.name}: {p}" for v in views if (p := _source_path(v)) is not None and not p.exists()]
    tables = {v.name: t for v in views if (t := _source_table(v)) is not None}
    missing += [f"{name}: table {table}" for name, table in _missing_tables(settings, tables).items()]
    if missing:
        raise FeatureStoreError(
            "Offline sources are missing (" + "; ".join(missing) + "). "
            "Build the marts (dbt, the transform stage) and the item embeddings (the encode stage) first."
        )


def _missing_tables(settings: Settings, tables: dict[str, str]) -> dict[str, str]:
    """The entries of ``{view: table}`` whose table does not exist in the Postgres warehouse."""
    if not tables:
        return {}
    from recsys.transform.postgres import connect

    with connect(settings.warehouse.postgres) as conn, conn, conn.cursor() as cur:
        names = sorted(set(tables.values()))
        cur.execute("select t, to_regclass(t) is not null from unnest(%s::text[]) as t", (names,))
        exists = dict(cur.fetchall())
    return {view: table for view, table in tables.items() if not exists[table]}


def _check_window(start: datetime, end: datetime) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise FeatureStoreError(f"Materialization window [{start}, {end}) must be timezone-aware (UTC).")
    if start >= end:
        raise FeatureStoreError(f"Materialization window is empty: start {start} is not before end {end}.")


def _views(store: FeatureStore, names: list[str] | None) -> list[FeatureView]:
    known = {view.name: view for view in store.list_feature_views()}
    if not known:
        raise FeatureStoreError("The Feast registry has no feature views: run recsys.features.apply() first.")
    unknown = sorted(set(names or []) - set(known))
    if unknown:
        raise FeatureStoreError(f"Unknown feature views {unknown}; registered: {sorted(known)}.")
    return [known[name] for name in names] if names else list(known.values())


def materialize(
    settings: Settings,
    start: datetime,
    end: datetime,
    views: list[str] | None = None,
    *,
    project: str = PROJECT,
    chunk: timedelta = timedelta(days=7),
) -> None:
    """Load the latest feature row per entity with ``start <= event_timestamp <= end`` into the online store.

    The window is materialized in consecutive ``chunk``-long pieces, oldest first, so a long backfill never
    holds more than one chunk of feature rows in memory; later chunks overwrite earlier values, as one
    window would. Writes are order-safe (``repo_config``): materializing an older window after a newer one
    leaves the newer online values in place.

    The caller (Airflow) owns the window: pass the data interval start minus the late-data overlap, and the
    interval end. Feast includes rows stamped exactly at ``end``, which a daily mart needs: a day's feature
    row is stamped at the day's end (the interval end); re-writing it in the next run is a harmless upsert.
    ``views`` limits materialization to those feature views (default: all). Both datetimes must be tz-aware.
    """
    _check_window(start, end)
    store = feature_store(settings, project=project)
    selected = _views(store, views)
    _require_sources(settings, selected)
    for lo, hi in windows(start, end, chunk):
        _materialize_chunk(settings, store, lo, hi, [v.name for v in selected])


def _materialize_chunk(settings: Settings, store: FeatureStore, lo: datetime, hi: datetime, views: list[str]) -> None:
    """One chunk, tried again as ``settings.retries.online_store`` says when the online store's connection fails.

    A retry re-writes the chunk whole: the writes are upserts of the same rows (order-safe), so a chunk cut off
    by a lost connection and written again leaves what one uninterrupted write leaves.
    """
    policy = settings.retries.online_store
    delays = policy.delays()
    for attempt in range(1, policy.attempts + 1):
        try:
            store.materialize(start_date=lo, end_date=hi, feature_views=views)
            return
        except Exception as exc:
            lost = _online_store_lost(exc)
            if lost is None:
                raise FeatureStoreError(f"Materializing [{lo}, {hi}] into the online store failed: {exc}") from exc
            log.warning("materialize [%s, %s]: online store lost (attempt %d/%d): %s", lo, hi, attempt,
                        policy.attempts, lost)  # fmt: skip
            if attempt == policy.attempts:
                raise FeatureStoreError(
                    f"Materializing [{lo}, {hi}] failed: the online store ({_describe_online(settings)}) refused or "
                    f"dropped the connection on each of {policy.attempts} tries (last: {lost}). Views written "
                    "before the loss may hold part of the window; the materialization is not recorded as done, so "
                    "the freshness check fails until it is. Start the online store (check RECSYS_REDIS_URL), then "
                    "re-run the materialization for the same day (`recsys run DAY`, or clear the materialize task): "
                    "its writes are idempotent and order-safe, so the re-run leaves the online values of a run "
                    "without the outage. More tries: retries.online_store.attempts "
                    "(RECSYS_RETRIES__ONLINE_STORE__ATTEMPTS)."
                ) from exc
            time.sleep(delays[attempt - 1])


def _online_store_lost(exc: BaseException) -> str | None:
    """The connection error (Redis refused, reset, timed out) behind ``exc``, as text; None for any other error."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__module__.startswith("redis"):
            from redis.exceptions import ConnectionError as RedisConnectionError
            from redis.exceptions import TimeoutError as RedisTimeoutError

            if isinstance(current, RedisConnectionError | RedisTimeoutError):
                return f"{type(current).__name__}: {str(current).splitlines()[0] if str(current) else ''}"
        if isinstance(current, ConnectionError | TimeoutError):
            return f"{type(current).__name__}: {current}"
        current = current.__cause__ or current.__context__
    return None


def _describe_online(settings: Settings) -> str:
    if settings.online_store == "redis":
        return f"Redis at {settings.redis_url.split(',')[0]}"  # the options after the first comma may hold a password
    return f"SQLite {settings.online_sqlite_path}"


def materialized_until(store: FeatureStore, views: Iterable[str]) -> dict[str, datetime | None]:
    """``{view: end of its newest materialization into the online store}`` (UTC; None: never materialized).

    Read from the registry's materialization intervals: the latest ``end`` passed to ``materialize`` for the
    view, whatever order the intervals ran in. Serving start-up and the freshness check both read it here.
    """
    from recsys import lake

    listed = {view.name: view for view in store.list_feature_views()}  # one registry read for all of them
    # a name not listed goes to get_feature_view, which raises Feast's own not-found error
    found = {name: listed[name] if name in listed else store.get_feature_view(name) for name in views}
    ends = {name: view.most_recent_end_time for name, view in found.items()}
    return {name: None if end is None else lake.utc(end) for name, end in ends.items()}


def windows(start: datetime, end: datetime, chunk: timedelta) -> list[tuple[datetime, datetime]]:
    """``[start, end]`` cut into consecutive pieces of at most ``chunk`` (pieces share no instant)."""
    if chunk <= timedelta(0):
        raise FeatureStoreError(f"materialization chunk must be positive, got {chunk}.")
    pieces, lo = [], start
    while lo <= end:
        hi = min(lo + chunk, end)
        pieces.append((lo, hi))
        if hi == end:
            break
        lo = hi + timedelta(microseconds=1)
    return pieces


def _service(store: FeatureStore, service: str) -> Any:
    from feast.errors import FeatureServiceNotFoundException

    try:
        return store.get_feature_service(service)
    except FeatureServiceNotFoundException as exc:
        known = sorted(s.name for s in store.list_feature_services())
        raise FeatureStoreError(
            f"Feature service {service!r} is not registered (known: {known}); run recsys.features.apply()."
        ) from exc


def historical_features(
    settings: Settings, entity_df: pd.DataFrame, service: str, *, project: str = PROJECT
) -> pd.DataFrame:
    """Point-in-time join of the named feature service onto ``entity_df`` (join keys + ``event_timestamp``).

    Rows come back in ``entity_df``'s order with its columns unchanged (index reset), whichever offline store
    answers, followed by the service's feature columns.
    """
    if "event_timestamp" not in entity_df.columns:
        raise FeatureStoreError(
            f"entity_df needs an 'event_timestamp' column (UTC) next to the join keys; got {list(entity_df.columns)}."
        )
    store = feature_store(settings, project=project)
    feature_service = _service(store, service)
    _require_sources(settings, [store.get_feature_view(p.name) for p in feature_service.feature_view_projections])
    if ROW_COLUMN in entity_df.columns:
        raise FeatureStoreError(f"entity_df has a column {ROW_COLUMN!r}, which historical_features reserves.")
    entities = entity_df.reset_index(drop=True)
    try:
        frame = store.get_historical_features(
            entity_df=entities.assign(**{ROW_COLUMN: range(len(entities))}), features=feature_service
        ).to_df()
    except Exception as exc:
        raise FeatureStoreError(f"Historical retrieval for feature service {service!r} failed: {exc}") from exc
    return _in_entity_order(frame, entities)


def _in_entity_order(frame: pd.DataFrame, entities: pd.DataFrame) -> pd.DataFrame:
    """The offline store's answer in ``entities``' row order, with ``entities``' own columns and dtypes.

    Offline stores return rows in any order (PostgreSQL's differs from DuckDB's) and with their own
    timestamp types; the caller gets its entity rows back as passed, followed by the feature columns.
    """
    import pandas as pd

    if len(frame) != len(entities):
        raise FeatureStoreError(
            f"The offline store answered {len(frame)} rows for {len(entities)} entity rows; "
            "check the feature views' join keys against entity_df."
        )
    ordered = frame.sort_values(ROW_COLUMN, kind="stable").reset_index(drop=True)
    features = [c for c in ordered.columns if c not in entities.columns and c != ROW_COLUMN]
    return pd.concat([entities, ordered[features]], axis=1)


def online_features(store: FeatureStore, service: str, entity_rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Latest online values of the named feature service for ``entity_rows`` (e.g. ``[{"user_id": 1}]``).

    Returns ``{column: [value per row]}``, join keys included; entities without online rows get ``None``.
    """
    if not entity_rows:
        raise FeatureStoreError("entity_rows is empty: pass at least one {join_key: id} row.")
    feature_service = _service(store, service)
    try:
        response = store.get_online_features(features=feature_service, entity_rows=entity_rows)
    except Exception as exc:
        raise FeatureStoreError(f"Online retrieval for feature service {service!r} failed: {exc}") from exc
    return dict(response.to_dict())
