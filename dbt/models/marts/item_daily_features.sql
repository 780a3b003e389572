{{ rolling_engagement_features('item_id', 'item', 'int_item_engagement_daily') }}
