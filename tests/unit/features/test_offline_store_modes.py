"""The offline store follows ``warehouse.target``: DuckDB over Parquet, or PostgreSQL over the mart tables.

No server is needed: these check the configuration and the source definitions, not retrieval (that is
tests/integration/test_postgres_run_mode.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys.config import Settings
from recsys.features import definitions, repo_config

POSTGRES = {
    "host": "warehouse.internal",
    "port": 6543,
    "user": "feast",
    "password": "s3cret",
    "dbname": "analytics_db",
    "schema_name": "marts",
    "sslmode": "require",
}
SOURCES = {
    "user_stats": "user_daily_features",
    "item_stats": "item_daily_features",
    "user_recent_items": "user_recent_items",
    "item_text_embedding": "item_text_embedding",
}


@pytest.fixture
def pg_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", warehouse={"target": "postgres", "postgres": POSTGRES})


def _views(settings: Settings) -> dict[str, object]:
    from feast import FeatureView

    return {obj.name: obj for obj in definitions(settings) if isinstance(obj, FeatureView)}


def test_duckdb_is_the_default(settings: Settings) -> None:
    config = repo_config(settings)
    assert config.offline_store.type == "duckdb"
    assert settings.tool_env()["RECSYS_WAREHOUSE__MARTS_DIR"] == str(settings.marts)


def test_postgres_offline_store_comes_from_the_postgres_section(pg_settings: Settings) -> None:
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres import PostgreSQLOfflineStoreConfig

    store = repo_config(pg_settings).offline_store
    assert isinstance(store, PostgreSQLOfflineStoreConfig)
    assert (store.host, store.port, store.database, store.db_schema) == (
        "warehouse.internal",
        6543,
        "analytics_db",
        "marts",
    )
    assert (store.user, store.password, store.sslmode) == ("feast", "s3cret", "require")


def test_postgres_sources_read_the_mart_tables_under_the_same_names(settings: Settings, pg_settings: Settings) -> None:
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

    duck, pg = _views(settings), _views(pg_settings)
    assert set(pg) == set(duck) == set(SOURCES)
    for view, table in SOURCES.items():
        source = pg[view].batch_source
        assert isinstance(source, PostgreSQLSource)
        assert source.name == duck[view].batch_source.name == table
        assert source.get_table_query_string() == f'"marts"."{table}"'
        assert source.timestamp_field == "event_timestamp"
        assert pg[view].schema == duck[view].schema  # the feature views themselves do not change
    services = {o.name for o in definitions(pg_settings) if type(o).__name__ == "FeatureService"}
    assert services == {"recommender_v1_user", "recommender_v1_item"}


def test_tool_env_holds_no_secret(pg_settings: Settings) -> None:
    env = pg_settings.tool_env()
    assert env["RECSYS_HOME"] == str(pg_settings.home)
    assert "s3cret" not in "".join(env.values())
