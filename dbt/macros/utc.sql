{#- Day arithmetic in UTC, independent of the session time zone. -#}

{% macro utc_date(timestamp_tz) -%}
    cast(timezone('UTC', {{ timestamp_tz }}) as date)
{%- endmacro %}

{% macro utc_day_end(date_column) -%}
    {#- The first instant after the UTC day: next midnight, as a timestamptz. -#}
    timezone('UTC', cast({{ date_column }} + interval 1 day as timestamp))
{%- endmacro %}
