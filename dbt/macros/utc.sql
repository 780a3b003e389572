{#- Day arithmetic in UTC, independent of the session time zone (same SQL on DuckDB and PostgreSQL). -#}

{% macro utc_date(timestamp_tz) -%}
    cast(timezone('UTC', {{ timestamp_tz }}) as date)
{%- endmacro %}

{% macro utc_day_end(date_column) -%}
    {#- The first instant after the UTC day: next midnight, as a timestamptz. -#}
    timezone('UTC', cast({{ date_column }} as timestamp) + interval '1 day')
{%- endmacro %}
