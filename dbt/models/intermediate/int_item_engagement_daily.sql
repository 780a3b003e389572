{{ engagement_daily_counts('item_id') }}
