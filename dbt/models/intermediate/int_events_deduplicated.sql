{{
    config(
        materialized='incremental',
        incremental_strategy='delete+insert',
        unique_key='event_date',
        on_schema_change='fail',
    )
}}

{%- set interval_start = var('interval_start', none) -%}
{%- set interval_end = var('interval_end', none) -%}

with

events as (
    select * from {{ ref('stg_app__events') }}
),

-- The templater renders this block only on incremental runs; its indentation is judged inconsistently there.
-- noqa: disable=LT02
{% if is_incremental() %}

reloaded_days as (
    select distinct {{ utc_date('occurred_at') }} as event_date
    from events
    {% if interval_start and interval_end %}
        where
            extracted_interval_start >= cast('{{ interval_start }}' as timestamptz)
            and extracted_interval_start < cast('{{ interval_end }}' as timestamptz)
    {% else %}
        where
            extracted_interval_start >= (select max(loaded.extracted_interval_start) from {{ this }} as loaded)
            or extracted_interval_start not in (
                select distinct loaded.extracted_interval_start from {{ this }} as loaded
            )
    {% endif %}
),

{% endif %}
-- noqa: enable=LT02

events_in_scope as (
    select
        *,
        {{ utc_date('occurred_at') }} as event_date
    from events
    {% if is_incremental() %}
        where {{ utc_date('occurred_at') }} in (select reloaded_days.event_date from reloaded_days)
    {% endif %}
),

ranked_copies as (
    select
        *,
        row_number() over (
            partition by event_id
            order by extracted_interval_start desc, occurred_at desc
        ) as copy_rank
    from events_in_scope
),

final as (
    select
        event_id,
        user_id,
        item_id,
        event_type,
        value,
        session_id,
        position,
        occurred_at,
        event_date,
        extracted_interval_start
    from ranked_copies
    where copy_rank = 1
)

select * from final
