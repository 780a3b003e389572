with

recent as (
    select
        user_id,
        feature_date,
        event_timestamp,
        unnest(recent_item_ids) as item_id
    from {{ ref('user_recent_items') }}
),

positives as (
    select
        user_id,
        item_id,
        occurred_at
    from {{ ref('interactions') }}
    where is_positive
)

select recent.*
from recent
where not exists (
    select 1
    from positives
    where
        positives.user_id = recent.user_id
        and positives.item_id = recent.item_id
        and positives.occurred_at < recent.event_timestamp
)
