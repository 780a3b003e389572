with

items as (
    select * from {{ ref('int_items_deduplicated') }}
),

with_text as (
    select
        item_id,
        title,
        category,
        concat_ws(
            ' | ',
            nullif(trim(title), ''),
            nullif(trim(category), ''),
            nullif(array_to_string(tags, ', '), ''),
            nullif(trim(body), '')
        ) as text,
        updated_at
    from items
),

final as (
    select
        item_id,
        title,
        category,
        text,
        md5(text) as content_hash,
        updated_at,
        updated_at as event_timestamp
    from with_text
)

select * from final
order by item_id
