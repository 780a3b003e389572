with

events as (
    select * from {{ ref('int_events_deduplicated') }}
),

counted_per_day as (
    select
        user_id,
        {{ utc_date('occurred_at') }} as activity_date,
        count(*) filter (where event_type = 'impression') as impressions,
        count(*) filter (where event_type = 'click') as clicks
    from events
    group by 1, 2
),

final as (
    select
        user_id,
        activity_date,
        cast(impressions as bigint) as impressions,
        cast(clicks as bigint) as clicks
    from counted_per_day
)

select * from final
