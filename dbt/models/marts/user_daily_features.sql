{{ rolling_engagement_features('user_id', 'user') }}
