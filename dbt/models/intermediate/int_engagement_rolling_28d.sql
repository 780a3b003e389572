with

daily_engagement as (
    select * from {{ ref('int_engagement_daily') }}
),

summed_over_28_days as (
    select
        entity,
        entity_id,
        activity_date as feature_date,
        sum(impressions) over trailing_28_days as impressions_in_window,
        sum(clicks) over trailing_28_days as clicks_in_window
    from daily_engagement
    window trailing_28_days as (
        partition by entity, entity_id
        order by activity_date
        range between interval '27 days' preceding and current row
    )
),

smoothed_ctr as (
    select
        *,
        cast(clicks_in_window + {{ var('ctr_prior_clicks') }} as double precision)
        / cast(impressions_in_window + {{ var('ctr_prior_impressions') }} as double precision) as ctr_in_window
    from summed_over_28_days
),

final as (
    select
        entity,
        entity_id,
        feature_date,
        {{ utc_day_end('feature_date') }} as event_timestamp,
        cast(impressions_in_window as bigint) as impressions_28d,
        cast(clicks_in_window as bigint) as clicks_28d,
        ctr_in_window as ctr_28d
    from smoothed_ctr
)

select * from final
