"""Feature views over the marts and the embeddings table.

TTLs: the 28-day window stats and recent items are looked up at most 28 days back (older rows describe
activity that has left the window); item text embeddings never expire (ttl 0 = no limit).
"""

from datetime import timedelta

from data_sources import (
    item_daily_features_source,
    item_text_embedding_source,
    user_daily_features_source,
    user_recent_items_source,
)
from entities import item, user
from feast import FeatureView, Field
from feast.types import Array, Float32, Float64, Int64

WINDOW_TTL = timedelta(days=28)

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
    source=user_daily_features_source,
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
    source=item_daily_features_source,
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
    source=user_recent_items_source,
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
    source=item_text_embedding_source,
    online=True,
    description="L2-normalised mean-pooled BERT embedding of the item's text.",
)
