with

interactions as (
    select * from {{ ref('interactions') }}
),

activity_days as (
    select distinct
        user_id,
        {{ utc_date('occurred_at') }} as feature_date
    from interactions
),

activity_days_with_end as (
    select
        user_id,
        feature_date,
        {{ utc_day_end('feature_date') }} as event_timestamp
    from activity_days
),

positives as (
    select
        user_id,
        item_id,
        occurred_at
    from interactions
    where is_positive
),

latest_positive_per_item as (
    select
        days.user_id,
        days.feature_date,
        positives.item_id,
        max(positives.occurred_at) as last_positive_at
    from activity_days_with_end as days
    inner join positives
        on
            days.user_id = positives.user_id
            and days.event_timestamp > positives.occurred_at
    group by days.user_id, days.feature_date, positives.item_id
),

ranked as (
    select
        *,
        row_number() over (
            partition by user_id, feature_date
            order by last_positive_at desc, item_id desc
        ) as recency_rank
    from latest_positive_per_item
),

recent_lists as (
    select
        user_id,
        feature_date,
        array_agg(item_id order by recency_rank) as recent_item_ids
    from ranked
    where recency_rank <= {{ var('recent_items_limit') }}
    group by user_id, feature_date
),

final as (
    select
        days.user_id,
        days.feature_date,
        days.event_timestamp,
        coalesce(recent_lists.recent_item_ids, {{ empty_array('bigint') }}) as recent_item_ids
    from activity_days_with_end as days
    left join recent_lists
        on
            days.user_id = recent_lists.user_id
            and days.feature_date = recent_lists.feature_date
)

select * from final
order by user_id, feature_date
