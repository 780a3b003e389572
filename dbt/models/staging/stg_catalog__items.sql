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
        cast(coalesce(tags, []) as varchar[]) as tags,
        cast(published_at as timestamptz) as published_at,
        cast(updated_at as timestamptz) as updated_at,
        cast(_interval_start as timestamptz) as extracted_interval_start
    from source
),

latest_version as (
    select *
    from renamed
    qualify row_number() over (
        partition by item_id
        order by updated_at desc, extracted_interval_start desc
    ) = 1
),

final as (
    select * from latest_version
)

select * from final
