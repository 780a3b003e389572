with

source as (
    select * from {{ source('app', 'events') }}
),

renamed as (
    select
        cast(event_id as varchar) as event_id,
        cast(user_id as bigint) as user_id,
        cast(item_id as bigint) as item_id,
        lower(cast(event_type as varchar)) as event_type,
        cast(value as double precision) as value,
        cast(session_id as varchar) as session_id,
        cast(position as integer) as position,
        cast(occurred_at as timestamptz) as occurred_at,
        cast(_interval_start as timestamptz) as extracted_interval_start
    from source
),

final as (
    select * from renamed
)

select * from final
