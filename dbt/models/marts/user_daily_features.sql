with

rolling_engagement as (
    select * from {{ ref('int_engagement_rolling_28d') }}
),

user_engagement as (
    select * from rolling_engagement
    where entity = 'user'
),

final as (
    select
        entity_id as user_id,
        feature_date,
        event_timestamp,
        impressions_28d as user_impressions_28d,
        clicks_28d as user_clicks_28d,
        ctr_28d as user_ctr_28d
    from user_engagement
)

select * from final
order by user_id, feature_date
