with

source as (
    select * from {{ source('app', 'users') }}
),

renamed as (
    select
        cast(user_id as bigint) as user_id,
        cast(created_at as timestamptz) as created_at,
        cast(country as varchar) as country,
        cast(age_band as varchar) as age_band,
        cast(updated_at as timestamptz) as updated_at,
        cast(_interval_start as timestamptz) as extracted_interval_start
    from source
),

final as (
    select * from renamed
)

select * from final
