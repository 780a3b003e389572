"""The recsys Feast definitions: entities, batch sources, feature views and feature services.

One set of definitions, two readers:

- the ``feast`` CLI, run in this directory (``feast plan``, ``feast apply``), registers the module-level objects
  below. Their sources are the default embedded layout (``RECSYS_HOME`` = ``<repo>/var``, warehouse ``duckdb``):
  Parquet paths relative to this directory, which Feast resolves against the repo path.
- the library (``recsys.features.store``) calls :func:`definitions` with the sources of the configured
  warehouse, built from ``recsys.config.Settings``: :func:`file_sources` over the Parquet marts and the
  embeddings file (``duckdb``), :func:`postgres_sources` over the mart tables (``postgres``), or
  :func:`spark_sources` over the Spark tables (``spark``, scale-out).

Source names are the same in both, so the feature views and services do not change. Importing this module reads
no environment variable and no file. Shapes: docs/contracts.md.

TTLs: the 28-day window stats and recent items are looked up at most 28 days back (older rows describe activity
that has left the window); item text embeddings never expire (ttl 0 = no limit).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.data_source import DataSource
from feast.types import Array, Float32, Float64, Int64

MARTS = ("user_daily_features", "item_daily_features", "user_recent_items")
EMBEDDINGS = "item_text_embedding"
SOURCES = (*MARTS, EMBEDDINGS)
DESCRIPTIONS = {
    **{name: f"dbt mart `{name}`." for name in MARTS},
    EMBEDDINGS: "L2-normalised BERT embeddings of item texts, one row per item and content version.",
}
TIMESTAMP = "event_timestamp"
WINDOW_TTL = timedelta(days=28)

# The default embedded layout, relative to this directory: RECSYS_HOME = <repo>/var (recsys.config.Settings).
DEFAULT_HOME = Path("..") / "var"


def file_sources(marts_dir: str | Path, embeddings_path: str | Path) -> dict[str, DataSource]:
    """The batch sources as files: ``<marts_dir>/<mart>.parquet`` and the embeddings Parquet file."""
    paths = {name: Path(marts_dir) / f"{name}.parquet" for name in MARTS}
    paths[EMBEDDINGS] = Path(embeddings_path)
    return {
        name: FileSource(name=name, path=str(path), timestamp_field=TIMESTAMP, description=DESCRIPTIONS[name])
        for name, path in paths.items()
    }


def postgres_sources(schema: str) -> dict[str, DataSource]:
    """The batch sources as PostgreSQL tables of the same names in ``schema`` (where dbt builds the marts)."""
    from feast.infra.offline_stores.contrib.postgres_offline_store.postgres_source import PostgreSQLSource

    return {
        name: PostgreSQLSource(
            name=name,
            table=f"{_quoted(schema)}.{_quoted(name)}",
            timestamp_field=TIMESTAMP,
            description=DESCRIPTIONS[name],
        )
        for name in SOURCES
    }


def spark_sources(database: str) -> dict[str, DataSource]:
    """The batch sources as Spark tables ``<database>.<name>`` (where dbt-spark builds the marts; the item embeddings
    table is written there too). Feast's Spark offline store reads them through the configured metastore."""
    from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

    return {
        name: SparkSource(
            name=name, table=f"{database}.{name}", timestamp_field=TIMESTAMP, description=DESCRIPTIONS[name]
        )
        for name in SOURCES
    }


def _quoted(identifier: str) -> str:
    """A PostgreSQL quoted identifier (embedded double quotes doubled)."""
    return '"' + identifier.replace('"', '""') + '"'


def definitions(sources: Mapping[str, DataSource]) -> dict[str, Entity | FeatureView | FeatureService]:
    """Every object of the repo, by name, its feature views reading ``sources`` (one per name in SOURCES)."""
    missing = sorted(set(SOURCES) - set(sources))
    if missing:
        raise ValueError(f"No batch source for {missing}: pass one per name in {SOURCES}.")
    user = Entity(
        name="user",
        join_keys=["user_id"],
        value_type=ValueType.INT64,
        description="A site user (source table `users`).",
    )
    item = Entity(
        name="item",
        join_keys=["item_id"],
        value_type=ValueType.INT64,
        description="A content item (source collection/table `items`).",
    )
    views = _feature_views(sources, user, item)
    objects = [user, item, *views.values(), *_feature_services(views)]
    by_name = {obj.name: obj for obj in objects}
    if len(by_name) != len(objects):
        raise ValueError(f"Feast object names must be unique: {[obj.name for obj in objects]}.")
    return by_name


def _feature_views(sources: Mapping[str, DataSource], user: Entity, item: Entity) -> dict[str, FeatureView]:
    """The feature views over the marts and the embeddings table."""
    user_stats = FeatureView(
        name="user_stats",
        entities=[user],
        ttl=WINDOW_TTL,
        schema=[
            Field(name="user_id", dtype=Int64),
            Field(name="user_impressions_28d", dtype=Int64),
            Field(name="user_clicks_28d", dtype=Int64),
            Field(name="user_ctr_28d", dtype=Float64),
        ],
        source=sources["user_daily_features"],
        online=True,
        description="Each user's 28-day impressions, clicks and smoothed CTR as of the end of a day.",
    )
    item_stats = FeatureView(
        name="item_stats",
        entities=[item],
        ttl=WINDOW_TTL,
        schema=[
            Field(name="item_id", dtype=Int64),
            Field(name="item_impressions_28d", dtype=Int64),
            Field(name="item_clicks_28d", dtype=Int64),
            Field(name="item_ctr_28d", dtype=Float64),
        ],
        source=sources["item_daily_features"],
        online=True,
        description="Each item's 28-day impressions, clicks and smoothed CTR as of the end of a day.",
    )
    user_recent_items = FeatureView(
        name="user_recent_items",
        entities=[user],
        ttl=WINDOW_TTL,
        schema=[
            Field(name="user_id", dtype=Int64),
            Field(name="recent_item_ids", dtype=Array(Int64)),
        ],
        source=sources["user_recent_items"],
        online=True,
        description="The user's last positive items (at most recent_items_limit) up to a day's end, newest first.",
    )
    item_text_embedding = FeatureView(
        name="item_text_embedding",
        entities=[item],
        ttl=timedelta(0),
        schema=[
            Field(name="item_id", dtype=Int64),
            Field(name="embedding", dtype=Array(Float32)),
        ],
        source=sources[EMBEDDINGS],
        online=True,
        description="L2-normalised mean-pooled BERT embedding of the item's text.",
    )
    return {view.name: view for view in (user_stats, item_stats, user_recent_items, item_text_embedding)}


def _feature_services(views: Mapping[str, FeatureView]) -> list[FeatureService]:
    """Feature services, versioned per model: training and serving read the same one."""
    return [
        FeatureService(
            name="recommender_v1_user",
            features=[views["user_stats"], views["user_recent_items"]],
            description="User side of the recommender v1 two-tower model (training and online serving).",
        ),
        FeatureService(
            name="recommender_v1_item",
            features=[views["item_stats"], views["item_text_embedding"]],
            description="Item side of the recommender v1 two-tower model (training and item matrix export).",
        ),
    ]


# What the `feast` CLI registers: the objects over the default embedded layout.
_DEFAULT = definitions(file_sources(DEFAULT_HOME / "marts", DEFAULT_HOME / "embeddings" / f"{EMBEDDINGS}.parquet"))
user = _DEFAULT["user"]
item = _DEFAULT["item"]
user_stats = _DEFAULT["user_stats"]
item_stats = _DEFAULT["item_stats"]
user_recent_items = _DEFAULT["user_recent_items"]
item_text_embedding = _DEFAULT["item_text_embedding"]
recommender_v1_user = _DEFAULT["recommender_v1_user"]
recommender_v1_item = _DEFAULT["recommender_v1_item"]
