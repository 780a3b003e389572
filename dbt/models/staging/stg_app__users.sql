-- Latest version of each user (change capture: one raw row per version).
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

ranked_versions as (
    select
        *,
        row_number() over (
            partition by user_id
            order by updated_at desc, extracted_interval_start desc
        ) as version_rank
    from renamed
),

final as (
    select
        user_id,
        created_at,
        country,
        age_band,
        updated_at,
        extracted_interval_start
    from ranked_versions
    where version_rank = 1
)

select * from final
