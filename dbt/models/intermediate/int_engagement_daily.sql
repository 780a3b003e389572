with

events as (
    select * from {{ ref('int_events_deduplicated') }}
),

events_by_entity as (
    select
        'user' as entity,
        user_id as entity_id,
        event_type,
        occurred_at
    from events
    union all
    select
        'item' as entity,
        item_id as entity_id,
        event_type,
        occurred_at
    from events
),

counted_per_day as (
    select
        entity,
        entity_id,
        {{ utc_date('occurred_at') }} as activity_date,
        count(*) filter (where event_type = 'impression') as impressions,
        count(*) filter (where event_type = 'click') as clicks
    from events_by_entity
    group by 1, 2, 3
),

final as (
    select
        entity,
        entity_id,
        activity_date,
        cast(impressions as bigint) as impressions,
        cast(clicks as bigint) as clicks
    from counted_per_day
)

select * from final
