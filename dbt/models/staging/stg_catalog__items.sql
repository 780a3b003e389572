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

final as (
    select * from renamed
)

select * from final
