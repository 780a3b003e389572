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
        cast(
            case
                when event_type in ('click', 'like', 'purchase') then 1
                when event_type = 'rating' and value >= 4 then 1
                else 0
            end
            as bigint
        ) as label,
        occurred_at,
        occurred_at as event_timestamp
    from events
),

final as (
    select * from labelled
)

select * from final
order by event_id
