{{ rolling_engagement_features('item_id', 'item') }}
