{% macro utc_date(timestamp_tz) -%}
    cast(timezone('UTC', {{ timestamp_tz }}) as date)
{%- endmacro %}

{% macro utc_day_end(date_column) -%}
    timezone('UTC', cast({{ date_column }} as timestamp) + interval '1 day')
{%- endmacro %}
