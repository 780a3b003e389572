with

users as (
    select * from {{ ref('stg_app__users') }}
),

ranked_versions as (
    select
        *,
        row_number() over (
            partition by user_id
            order by updated_at desc, extracted_interval_start desc
        ) as version_rank
    from users
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
