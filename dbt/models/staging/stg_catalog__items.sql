-- Latest version of each item document (change capture: one raw row per version).
with

source as (
    select * from {{ source('catalog', 'items') }}
),

renamed as (
    select
        cast(item_id as bigint) as item_id,
        cast(title as varchar) as title,
        cast(body as varchar) as body,
        cast(category as varchar) as category,
        cast(coalesce(tags, {{ empty_array('varchar') }}) as varchar[]) as tags,
        cast(published_at as timestamptz) as published_at,
        cast(updated_at as timestamptz) as updated_at,
        cast(_interval_start as timestamptz) as extracted_interval_start
    from source
),

ranked_versions as (
    select
        *,
        row_number() over (
            partition by item_id
            order by updated_at desc, extracted_interval_start desc
        ) as version_rank
    from renamed
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
