"""Feature services, versioned per model: training and serving read the same one."""

from feast import FeatureService
from features import item_stats, item_text_embedding, user_recent_items, user_stats

recommender_v1_user = FeatureService(
    name="recommender_v1_user",
    features=[user_stats, user_recent_items],
    description="User side of the recommender v1 two-tower model (training and online serving).",
)

recommender_v1_item = FeatureService(
    name="recommender_v1_item",
    features=[item_stats, item_text_embedding],
    description="Item side of the recommender v1 two-tower model (training and item matrix export).",
)
