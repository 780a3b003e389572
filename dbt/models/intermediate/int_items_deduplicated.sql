with

items as (
    select * from {{ ref('stg_catalog__items') }}
),

ranked_versions as (
    select
        *,
        row_number() over (
            partition by item_id
            order by updated_at desc, extracted_interval_start desc
        ) as version_rank
    from items
),

final as (
    select
        item_id,
        title,
        body,
        category,
        tags,
        published_at,
        updated_at,
        extracted_interval_start
    from ranked_versions
    where version_rank = 1
)

select * from final
