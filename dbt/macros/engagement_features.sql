{#-
  Impression and click counts of one entity (user or item) per UTC day with activity.
-#}
{% macro engagement_daily_counts(entity_id) %}
with

events as (
    select * from {{ ref('int_events_deduplicated') }}
),

daily_counts as (
    select
        {{ entity_id }},
        {{ utc_date('occurred_at') }} as activity_date,
        count(*) filter (where event_type = 'impression') as impressions,
        count(*) filter (where event_type = 'click') as clicks
    from events
    group by 1, 2
),

final as (
    select
        {{ entity_id }},
        activity_date,
        cast(impressions as bigint) as impressions,
        cast(clicks as bigint) as clicks
    from daily_counts
)

select * from final
{% endmacro %}

{#-
  Daily rolling impression/click counts and smoothed CTR for one entity, one row per entity and day with
  activity, from an int_<entity>_engagement_daily model. The row for day D counts events with occurred_at in
  [D - (window_days - 1), D + 1 day), and its event_timestamp is D + 1 day (next UTC midnight): it never
  sees an event at or after its timestamp.
-#}
{% macro rolling_engagement_features(entity_id, prefix, daily_counts_model, window_days=28) %}
with

daily_counts as (
    select * from {{ ref(daily_counts_model) }}
),

windowed as (
    select
        {{ entity_id }},
        activity_date as feature_date,
        sum(impressions) over trailing_window as impressions_in_window,
        sum(clicks) over trailing_window as clicks_in_window
    from daily_counts
    window trailing_window as (
        partition by {{ entity_id }}
        order by activity_date
        range between interval '{{ window_days - 1 }} days' preceding and current row
    )
),

final as (
    select
        {{ entity_id }},
        feature_date,
        {{ utc_day_end('feature_date') }} as event_timestamp,
        cast(impressions_in_window as bigint) as {{ prefix }}_impressions_{{ window_days }}d,
        cast(clicks_in_window as bigint) as {{ prefix }}_clicks_{{ window_days }}d,
        cast(clicks_in_window + {{ var('ctr_prior_clicks') }} as {{ type_float64() }})
        / cast(impressions_in_window + {{ var('ctr_prior_impressions') }} as {{ type_float64() }})
            as {{ prefix }}_ctr_{{ window_days }}d
    from windowed
)

select * from final
order by {{ entity_id }}, feature_date
{% endmacro %}
