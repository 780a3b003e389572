{{ rolling_engagement_features('user_id', 'user', 'int_user_engagement_daily') }}
