"""Feast past one machine, by configuration: the Spark offline store over the dbt-spark marts and the Redis Cluster
online store, loaded with Feast's own RepoConfig (no Spark and no Redis Cluster here: nothing connects)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from recsys.config import Settings
from recsys.features import store

SPARK_CONF = {
    "spark.master": "spark://spark-master.recsys.svc:7077",
    "spark.sql.catalogImplementation": "hive",
    "spark.hadoop.hive.metastore.uris": "thrift://hive-metastore.recsys.svc:9083",
    "spark.sql.session.timeZone": "UTC",
}
SPARK_MODULE = "feast.infra.offline_stores.contrib.spark_offline_store.spark"
NODES = "redis-0.redis.recsys.svc:6379,redis-1.redis.recsys.svc:6379,redis-2.redis.recsys.svc:6379"


class _StandIn(types.ModuleType):
    """A module whose every attribute is an empty class (SparkConf, SparkSession, DataFrame in annotations)."""

    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})


@pytest.fixture
def pyspark_stand_in(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Feast's Spark store module imports pyspark at its top, which this environment lacks (~300 MB), and RepoConfig
    validates the offline block with that module's pydantic ``SparkOfflineStoreConfig``: empty stand-in modules let
    it import. Nothing of Spark runs; the module is not left behind bound to them."""
    pyspark, pyspark_sql = _StandIn("pyspark"), _StandIn("pyspark.sql")
    pyspark.sql = pyspark_sql
    monkeypatch.setitem(sys.modules, "pyspark", pyspark)
    monkeypatch.setitem(sys.modules, "pyspark.sql", pyspark_sql)
    monkeypatch.delitem(sys.modules, SPARK_MODULE, raising=False)
    yield
    sys.modules.pop(SPARK_MODULE, None)


@pytest.fixture
def scale_settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        online_store="redis_cluster",
        redis_url=NODES,
        warehouse={"target": "spark", "spark": {"staging_location": "s3a://recsys/feast-staging"}},
    )


@pytest.mark.usefixtures("pyspark_stand_in")
def test_redis_cluster_online_store_loads_in_feasts_repo_config(scale_settings: Settings) -> None:
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType

    online = store.repo_config(scale_settings).online_store
    assert isinstance(online, RedisOnlineStoreConfig)
    assert (online.redis_type, online.connection_string, online.skip_dedup) == (RedisType.redis_cluster, NODES, False)


@pytest.mark.usefixtures("pyspark_stand_in")
def test_spark_offline_store_config_validates_against_feasts_spark_config(scale_settings: Settings) -> None:
    assert store.offline_store_config(scale_settings) == {
        "type": "spark",
        "spark_conf": SPARK_CONF,
        "staging_location": "s3a://recsys/feast-staging",
    }
    offline = store.repo_config(scale_settings).offline_store
    assert type(offline).__name__ == "SparkOfflineStoreConfig"
    assert (offline.type, offline.spark_conf, offline.staging_location) == (
        "spark",
        SPARK_CONF,
        "s3a://recsys/feast-staging",
    )


@pytest.mark.filterwarnings("ignore:The spark data source API is an experimental feature:RuntimeWarning")
def test_feature_views_read_the_spark_mart_tables(scale_settings: Settings) -> None:
    from feast import FeatureView
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    views = {o.name: o for o in store.definitions(scale_settings) if isinstance(o, FeatureView)}
    sources = {name: view.batch_source for name, view in views.items()}
    assert all(isinstance(source, SparkSource) for source in sources.values())
    assert {name: (s.table, s.timestamp_field) for name, s in sources.items()} == {
        "user_stats": ("analytics.user_daily_features", "event_timestamp"),
        "item_stats": ("analytics.item_daily_features", "event_timestamp"),
        "user_recent_items": ("analytics.user_recent_items", "event_timestamp"),
        "item_text_embedding": ("analytics.item_text_embedding", "event_timestamp"),
    }


def test_the_python_mart_readers_refuse_the_spark_warehouse(scale_settings: Settings) -> None:
    from recsys.errors import TransformError
    from recsys.transform.warehouse import read_mart

    with pytest.raises(TransformError, match="reading the mart 'interactions' on the Spark warehouse is not supported"):
        read_mart(scale_settings, "interactions")
