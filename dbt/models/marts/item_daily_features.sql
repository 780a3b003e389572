with

rolling_engagement as (
    select * from {{ ref('int_engagement_rolling_28d') }}
),

item_engagement as (
    select * from rolling_engagement
    where entity = 'item'
),

final as (
    select
        entity_id as item_id,
        feature_date,
        event_timestamp,
        impressions_28d as item_impressions_28d,
        clicks_28d as item_clicks_28d,
        ctr_28d as item_ctr_28d
    from item_engagement
)

select * from final
order by item_id, feature_date
