{{ engagement_daily_counts('user_id') }}
