"""Batch sources: the dbt marts and the item text embeddings table, in the configured offline store.

``RECSYS_OFFLINE_STORE`` (exported by ``recsys.config.Settings.tool_env()`` from ``warehouse_target``) picks
them: ``duckdb`` (default) reads the Parquet exports under ``RECSYS_MARTS_DIR`` and the embeddings file
``RECSYS_EMBEDDINGS_PATH``; ``postgres`` reads the mart tables and ``item_text_embedding`` in the schema
``RECSYS_MARTS_SCHEMA`` (the Feast offline store must then be ``type: postgres`` on the same database).
Source names are the same in both, so the feature views and services do not change. Nothing is read from
the current directory. Shapes: docs/contracts.md.
"""

import os
from pathlib import Path

from feast import FileSource
from feast.data_source import DataSource

OFFLINE_STORES = ("duckdb", "postgres")


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(
            f"{name} is not set. Export the recsys tool environment first "
            "(the variables of recsys.config.Settings().tool_env()), or use recsys.features.apply()."
        )
    return value


def _offline_store() -> str:
    store = os.environ.get("RECSYS_OFFLINE_STORE", "duckdb")
    if store not in OFFLINE_STORES:
        raise RuntimeError(f"RECSYS_OFFLINE_STORE={store!r}: use one of {OFFLINE_STORES} (Settings.warehouse_target).")
    return store


def _source(name: str, path: Path, description: str) -> DataSource:
    """The batch source ``name``: a Postgres table of that name in the marts schema, or the Parquet ``path``."""
    if _offline_store() == "postgres":
        from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

        return PostgreSQLSource(
            name=name,
            table=f'"{_env("RECSYS_MARTS_SCHEMA")}"."{name}"',
            timestamp_field="event_timestamp",
            description=description,
        )
    return FileSource(name=name, path=str(path), timestamp_field="event_timestamp", description=description)


def _mart(name: str) -> DataSource:
    return _source(name, Path(_env("RECSYS_WAREHOUSE__MARTS_DIR")) / f"{name}.parquet", f"dbt mart `{name}`.")


user_daily_features_source = _mart("user_daily_features")
item_daily_features_source = _mart("item_daily_features")
user_recent_items_source = _mart("user_recent_items")

item_text_embedding_source = _source(
    "item_text_embedding",
    Path(_env("RECSYS_EMBEDDINGS_PATH")),
    "L2-normalised BERT embeddings of item texts, one row per item and content version.",
)
