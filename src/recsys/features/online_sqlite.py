"""An order-safe SQLite online store: re-materializing an older interval never replaces newer values.

Feast's ``SqliteOnlineStore`` upserts every row it is given, so materializing an older interval after a newer
one writes the older values back (its Redis store compares event timestamps and skips older rows). This
subclass keeps Feast's tables exactly as they are (``{project}_{view}``: entity_key, feature_name, value,
..., event_ts; ``recsys.serving.online.SqliteRows`` reads them directly) and adds one trigger per table:

    BEFORE UPDATE ... WHEN NEW.event_ts < OLD.event_ts BEGIN SELECT RAISE(IGNORE); END

so SQLite itself drops the update of a row whose stored event time is newer, inside Feast's own upsert and
transaction. The guard lives in the database file: once a table has it, every writer of that file is
order-safe, the plain ``feast`` CLI included. A row with the same event time is rewritten (a re-run of an
interval stores its recomputed values; Feast's Redis store keeps the first write instead). Event times are
stored by Feast as whole seconds.

It is configured by class path (``ONLINE_STORE_TYPE``) in ``recsys.features.store.repo_config``; importing this
module imports Feast, so import it where a store is configured, never at package import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final, Literal

from feast import Entity, FeatureView
from feast.infra.online_stores.sqlite import SqliteOnlineStore, SqliteOnlineStoreConfig, _quote_id, _table_id
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.repo_config import RepoConfig

ONLINE_STORE_TYPE: Final = "recsys.features.online_sqlite.OrderSafeSqliteOnlineStore"
TRIGGER_SUFFIX = "_keep_newer"


class OrderSafeSqliteOnlineStoreConfig(SqliteOnlineStoreConfig):
    """``SqliteOnlineStoreConfig`` selecting :class:`OrderSafeSqliteOnlineStore` (same ``path`` and options; the
    ``type`` selector is narrowed to this store's class path)."""

    type: Literal["recsys.features.online_sqlite.OrderSafeSqliteOnlineStore"] = ONLINE_STORE_TYPE  # type: ignore[assignment]


def guard_sql(table: str) -> str:
    """The trigger that makes an upsert into Feast's SQLite ``table`` keep rows with a newer ``event_ts``."""
    return (
        f"CREATE TRIGGER IF NOT EXISTS {_quote_id(table + TRIGGER_SUFFIX)} BEFORE UPDATE ON {_quote_id(table)} "
        "WHEN NEW.event_ts < OLD.event_ts BEGIN SELECT RAISE(IGNORE); END"
    )


class OrderSafeSqliteOnlineStore(SqliteOnlineStore):
    """Feast's SQLite online store whose tables never take an older row over a newer one (module docstring)."""

    def _table(self, config: RepoConfig, table: FeatureView) -> str:
        return _table_id(config.project, table, config.registry.enable_online_feature_view_versioning)

    def _guard(self, config: RepoConfig, table: FeatureView) -> None:
        """Add the trigger to ``table`` (a no-op when it has it: cheap enough to run before every batch)."""
        conn = self._get_conn(config)
        with conn:
            conn.execute(guard_sql(self._table(config, table)))

    def update(
        self,
        config: RepoConfig,
        tables_to_delete: Sequence[FeatureView],
        tables_to_keep: Sequence[FeatureView],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
        partial: bool,
    ) -> None:
        """Feast's table creation (``feast apply``), then the guard on every table kept."""
        super().update(config, tables_to_delete, tables_to_keep, entities_to_delete, entities_to_keep, partial)
        for table in tables_to_keep:
            self._guard(config, table)

    def online_write_batch(
        self,
        config: RepoConfig,
        table: FeatureView,
        data: list[tuple[EntityKeyProto, dict[str, ValueProto], datetime, datetime | None]],
        progress: Callable[[int], Any] | None,
    ) -> None:
        """Feast's upsert, with the guard in place first (a table created before this store existed gets it)."""
        self._guard(config, table)
        super().online_write_batch(config, table, data, progress)
