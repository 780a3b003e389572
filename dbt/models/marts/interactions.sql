with

events as (
    select * from {{ ref('int_events_deduplicated') }}
),

labelled as (
    select
        event_id,
        user_id,
        item_id,
        event_type,
        coalesce(
            event_type in ('click', 'like', 'purchase')
            or (event_type = 'rating' and value >= 4),
            false
        ) as is_positive,
        occurred_at,
        occurred_at as event_timestamp
    from events
),

final as (
    select * from labelled
)

select * from final
order by event_id
