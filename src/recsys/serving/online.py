"""Lean reads of the online store Feast materialized, for the serving hot path.

:func:`open_online_rows` asks the Feast SDK once which feature views and fields a feature service holds, then
returns a reader that decodes Feast's own storage layout directly: :class:`RedisRows` (one pipelined round trip
per batch, no retries, a short socket timeout) or :class:`SqliteRows` (a read-only connection). Both answer
exactly what ``FeatureStore.get_online_features`` answers for the same users; :class:`FeastSdkRows` is that SDK
path behind the same interface (comparison and fallback for layouts the lean readers do not decode).

Like ``get_online_features`` (no precomputed vectors), the readers do not apply the feature views' TTL: a
materialized row is returned however old it is. Freshness is checked at service start, not per request.
The layout is resolved when the reader opens: reopen it after ``feast apply`` changes the feature service.
"""

from __future__ import annotations

import functools
import logging
import math
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from recsys.errors import FeatureStoreError, UnsupportedFeatureLayout
from recsys.features.store import PROJECT

if TYPE_CHECKING:
    from feast import FeatureStore

    from recsys.config import Settings

log = logging.getLogger(__name__)

RECENT_ITEMS_FEATURE = "recent_item_ids"
_KEY_FIELDS = {"INT64": "int64_val", "INT32": "int32_val"}  # entity value type → ValueProto field
_SCALARS = frozenset({"int64_val", "int32_val", "double_val", "float_val", "bool_val"})
_LISTS = frozenset({"int64_list_val", "int32_list_val", "double_list_val", "float_list_val"})
_KEY_CACHE = 1 << 16  # users whose encoded store key is kept (a few MB)


@dataclass(frozen=True)
class UserRow:
    """One user's online row."""

    features: list[float] | None  # values in the requested feature-name order; None if not complete and finite
    recent_items: list[int]  # the user's recent item ids, newest first ([] if none)


class OnlineRows(Protocol):
    """Batch reader of users' online rows."""

    feature_names: list[str]

    def read(self, user_ids: Sequence[int]) -> list[UserRow]:
        """One row per user id, in order, in one store round trip; FeatureStoreError if the store is unreadable."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


@dataclass(frozen=True)
class _Layout:
    """Where a feature service's values live in the online store (resolved once from the registry)."""

    project: str
    join_key: str  # the entity key's join key name as stored (user_id)
    key_field: str  # ValueProto field of the join key value (int64_val)
    key_version: int  # entity key serialization version
    views: dict[str, list[str]]  # storage name of each feature view → the fields this reader needs from it
    features: list[tuple[str, str]]  # (view, field) of each requested feature name
    recent: tuple[str, str] | None  # (view, field) of recent_item_ids, if the service has it
    request_keys: list[str]  # entity-row keys the SDK expects (join key aliases)
    bare_names: list[str]  # requested names as the SDK's response columns spell them

    def key_encoder(self, *, redis: bool) -> Callable[[int], bytes]:
        """A memoized ``user_id →`` store key, by Feast's own helpers (Redis: entity key + project)."""
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.helpers import _redis_key
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey

        value = _value_class()

        @functools.lru_cache(maxsize=_KEY_CACHE)
        def encode(user_id: int) -> bytes:
            key = EntityKey(join_keys=[self.join_key], entity_values=[value(**{self.key_field: user_id})])
            if redis:
                return _redis_key(self.project, key, self.key_version)
            return serialize_entity_key(key, self.key_version)

        return encode

    def row(self, values: dict[tuple[str, str], Any]) -> UserRow:
        """A UserRow from decoded ``{(view, field): value}`` (absent = None), by select_features' rules."""
        features: list[float] | None = []
        for ref in self.features:
            value = values.get(ref)
            if value is None or isinstance(value, bool) or not isinstance(value, int | float):
                features = None
                break
            if not math.isfinite(float(value)):
                features = None
                break
            features.append(float(value))
        recent = values.get(self.recent) if self.recent else None
        return UserRow(features, [int(i) for i in recent] if recent else [])


@functools.cache
def _value_class() -> Any:
    from feast.protos.feast.types.Value_pb2 import Value

    return Value


def _python_value(blob: bytes | None) -> Any:
    """Decode a serialized ValueProto to the Python value ``OnlineResponse.to_dict`` gives (None if empty)."""
    if not blob:
        return None
    proto = _value_class()()
    proto.ParseFromString(blob)
    kind = proto.WhichOneof("val")
    if kind is None:
        return None
    if kind in _SCALARS:
        return getattr(proto, kind)
    if kind in _LISTS:
        return list(getattr(proto, kind).val)
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(proto)


def resolve_layout(store: FeatureStore, service_name: str, feature_names: Sequence[str]) -> _Layout:
    """The layout of ``service_name``'s user rows; ``UnsupportedFeatureLayout`` for what only the SDK reads."""
    from feast.infra.online_stores.helpers import compute_versioned_name

    try:
        service = store.get_feature_service(service_name)
    except Exception as exc:
        known = sorted(s.name for s in store.list_feature_services())
        raise FeatureStoreError(
            f"Feature service {service_name!r} is not registered (known: {known}); run recsys.features.apply()."
        ) from exc
    versioning = bool(getattr(store.config.registry, "enable_online_feature_view_versioning", False))
    views: dict[str, list[str]] = {}
    by_field: dict[str, list[tuple[str, str]]] = {}  # field → [(storage view name, field)]
    by_ref: dict[str, tuple[str, str]] = {}  # "view__field" (view as the response names it) → ref
    join_keys, key_types, request_keys = set(), set(), []
    for projection in service.feature_view_projections:
        try:
            view = store.get_feature_view(projection.name)
        except Exception as exc:  # on-demand or stream feature views
            raise UnsupportedFeatureLayout(f"{projection.name} is not a plain feature view") from exc
        if len(view.entity_columns) != 1:
            raise UnsupportedFeatureLayout(f"{view.name} has {len(view.entity_columns)} join keys, not one")
        column = view.entity_columns[0]
        join_keys.add(column.name)
        key_types.add(column.dtype.to_value_type().name)
        request_keys.append(projection.join_key_map.get(column.name, column.name))
        stored = compute_versioned_name(view.with_projection(projection), versioning)
        views[stored] = []
        for field in projection.features:
            by_field.setdefault(field.name, []).append((stored, field.name))
            by_ref[f"{projection.name_to_use()}__{field.name}"] = (stored, field.name)
    if len(join_keys) != 1 or len(key_types) != 1 or (key_type := key_types.pop()) not in _KEY_FIELDS:
        raise UnsupportedFeatureLayout(
            f"join keys {sorted(join_keys)} of types {sorted(key_types)}, not one integer key"
        )
    if getattr(service, "precompute_online", False):
        raise UnsupportedFeatureLayout("the service reads precomputed vectors")

    features, bare = [], []
    for name in feature_names:
        matches = [by_ref[name]] if name in by_ref else by_field.get(name, [])
        if len(matches) != 1:
            raise FeatureStoreError(
                f"feature {name!r} {'is ambiguous' if matches else 'is not'} in feature service {service_name!r} "
                f"(features: {sorted(by_ref)}): the model's user_feature_names and the feature service disagree; "
                "retrain or fix the feature service."
            )
        features.append(matches[0])
        bare.append(matches[0][1])
    recent = (by_field.get(RECENT_ITEMS_FEATURE) or [None])[0]
    for view, field in [*features, *([recent] if recent else [])]:
        if field not in views[view]:
            views[view].append(field)
    return _Layout(
        project=store.project,
        join_key=join_keys.pop(),
        key_field=_KEY_FIELDS[key_type],
        key_version=store.config.entity_key_serialization_version,
        views={view: fields for view, fields in views.items() if fields},
        features=features,
        recent=recent,
        request_keys=list(dict.fromkeys(request_keys)),
        bare_names=bare,
    )


class RedisRows:
    """Rows read straight from Feast's Redis layout: one HMGET per user, all pipelined in one round trip.

    A user's hash (key: serialized entity key + project) holds every feature view of that entity: field
    ``mmh3("view:feature")`` → serialized ValueProto, and ``_ts:view`` → the row's event time (not needed).
    The client has no retries and ``timeout_s`` socket timeouts; it reconnects on the next read.
    """

    def __init__(self, layout: _Layout, client: Any, feature_names: Sequence[str]) -> None:
        """``client`` is a redis-py client of the store; see :func:`open_online_rows`."""
        from feast.infra.online_stores.helpers import _mmh3

        self.feature_names = list(feature_names)
        self._layout = layout
        self._client = client
        self._refs = [(view, field) for view, fields in layout.views.items() for field in fields]
        self._fields = [_mmh3(f"{view}:{field}") for view, field in self._refs]
        self._key = layout.key_encoder(redis=True)

    def read(self, user_ids: Sequence[int]) -> list[UserRow]:
        """Rows of ``user_ids`` in one pipelined round trip."""
        if not user_ids:
            return []
        from redis.exceptions import RedisError

        keys = [self._key(int(u)) for u in user_ids]
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hmget(key, self._fields)
                replies = pipe.execute()
        except (RedisError, OSError) as exc:
            raise FeatureStoreError(f"online read from Redis failed: {type(exc).__name__}: {exc}") from exc
        row = self._layout.row
        return [row(dict(zip(self._refs, map(_python_value, reply), strict=True))) for reply in replies]

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()


class SqliteRows:
    """Rows read straight from Feast's SQLite tables (``{project}_{view}``: entity_key, feature_name, value).

    One query per feature view per batch, on one read-only connection shared under a lock; the connection is
    opened on first read and reopened after an error.
    """

    def __init__(self, layout: _Layout, path: Path, feature_names: Sequence[str], timeout_s: float) -> None:
        """``path`` is the online store file; ``timeout_s`` bounds waiting on a writer's lock."""
        from feast.infra.online_stores.sqlite import _quote_id

        self.feature_names = list(feature_names)
        self._layout = layout
        self._path = path
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._key = layout.key_encoder(redis=False)
        self._queries = [
            (
                view,
                f"SELECT entity_key, feature_name, value FROM {_quote_id(f'{layout.project}_{view}')} "
                f"WHERE feature_name IN ({','.join('?' * len(fields))}) AND entity_key IN ",
                fields,
            )
            for view, fields in layout.views.items()
        ]

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            uri = self._path.resolve().as_uri() + "?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, timeout=self._timeout_s, check_same_thread=False)
        return self._conn

    def read(self, user_ids: Sequence[int]) -> list[UserRow]:
        """Rows of ``user_ids``."""
        if not user_ids:
            return []
        keys = [self._key(int(u)) for u in user_ids]
        marks = f"({','.join('?' * len(keys))})"
        found: dict[bytes, dict[tuple[str, str], Any]] = {}
        with self._lock:
            try:
                conn = self._connect()
                for view, sql, fields in self._queries:
                    for key, feature, blob in conn.execute(sql + marks, [*fields, *keys]):
                        found.setdefault(key, {})[(view, feature)] = _python_value(blob)
            except sqlite3.Error as exc:
                self._close()
                raise FeatureStoreError(f"online read from SQLite {self._path} failed: {exc}") from exc
        row = self._layout.row
        return [row(found.get(key, {})) for key in keys]

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._close()


class FeastSdkRows:
    """Rows through ``FeatureStore.get_online_features`` (about 3 ms a call; Feast's Redis client retries)."""

    def __init__(self, store: FeatureStore, service: str, feature_names: Sequence[str], layout: _Layout | None) -> None:
        """``layout`` maps qualified names to response columns; without it ``feature_names`` are used as given."""
        self.feature_names = list(feature_names)
        self._store = store
        self._service = service
        self._columns = layout.bare_names if layout else self.feature_names
        self._keys = layout.request_keys if layout else ["user_id"]

    def read(self, user_ids: Sequence[int]) -> list[UserRow]:
        """Rows of ``user_ids`` from one ``get_online_features`` call."""
        if not user_ids:
            return []
        from recsys.features.store import online_features
        from recsys.serving.features import select_features

        columns = online_features(self._store, self._service, [dict.fromkeys(self._keys, int(u)) for u in user_ids])
        recent = next((c for name, c in columns.items() if name.split("__")[-1] == RECENT_ITEMS_FEATURE), None)
        rows = []
        for i in range(len(user_ids)):
            features = select_features({name: [column[i]] for name, column in columns.items()}, self._columns)
            items = recent[i] if recent else None
            rows.append(UserRow(features, [int(item) for item in items] if items else []))
        return rows

    def close(self) -> None:
        """Nothing to release (the store's clients live as long as the store)."""


def open_online_rows(
    settings: Settings,
    feature_service: str,
    feature_names: Sequence[str],
    *,
    project: str = PROJECT,
    sdk: bool = False,
    store: FeatureStore | None = None,
) -> OnlineRows:
    """A reader of ``feature_service``'s user rows in the online store ``settings`` name.

    Uses the Feast SDK once to resolve the layout, then reads Redis or SQLite directly (``sdk=True``, or a
    service layout the lean readers do not decode, gives :class:`FeastSdkRows`). Raises FeatureStoreError when
    the registry cannot be read or a name in ``feature_names`` is not in the service; the online store itself
    is first contacted by :meth:`~OnlineRows.read`. Pass ``store`` to reuse a FeatureStore already built.
    """
    if store is None:
        from recsys.features.store import feature_store

        store = feature_store(settings, project=project)
    try:
        layout: _Layout | None = resolve_layout(store, feature_service, feature_names)
    except UnsupportedFeatureLayout as exc:
        log.warning("reading %s through the Feast SDK: %s", feature_service, exc)
        layout = None
    except FeatureStoreError:
        raise
    except Exception as exc:  # registry unreadable, ...
        raise FeatureStoreError(f"cannot resolve feature service {feature_service!r}: {exc}") from exc
    if sdk or layout is None:
        return FeastSdkRows(store, feature_service, feature_names, layout)
    timeout_s = settings.serving.store_timeout_s
    config = store.config.online_store
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig

    if isinstance(config, SqliteOnlineStoreConfig):  # Feast's, or recsys.features.online_sqlite's (same tables)
        from feast.infra.online_stores.sqlite import SqliteOnlineStore

        return SqliteRows(layout, Path(SqliteOnlineStore._get_db_path(store.config)), feature_names, timeout_s)
    if config.type == "redis" and getattr(config.redis_type, "value", config.redis_type) == "redis":
        return RedisRows(layout, _redis_client(config.connection_string, timeout_s), feature_names)
    log.warning("reading %s through the Feast SDK: online store %r has no lean reader", feature_service, config.type)
    return FeastSdkRows(store, feature_service, feature_names, layout)


def _redis_client(connection_string: str, timeout_s: float) -> Any:
    """A redis-py client from Feast's ``host:port[,db=N,password=...]`` with no retries and ``timeout_s``."""
    from feast.infra.online_stores.redis import RedisOnlineStore
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    nodes, params = RedisOnlineStore._parse_connection_string(connection_string)
    if "password" in params:
        params["password"] = str(params["password"])  # Feast json-decodes values: a numeric password is an int
    params.update(socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
    return Redis(host=nodes[0]["host"], port=int(nodes[0].get("port", 6379)), **params)
