{#-
  The few spots where DuckDB and PostgreSQL SQL differ, as adapter-dispatched macros
  (default__ = DuckDB syntax, postgres__ = PostgreSQL syntax).
-#}

{#- An empty array literal of the given element type. -#}
{% macro empty_array(element_type) -%}
    {{ return(adapter.dispatch('empty_array', 'recsys')(element_type)) }}
{%- endmacro %}

{% macro default__empty_array(element_type) -%}
    cast([] as {{ element_type }}[])
{%- endmacro %}

{% macro postgres__empty_array(element_type) -%}
    cast(array[] as {{ element_type }}[])
{%- endmacro %}

{#- 64-bit float: DuckDB's FLOAT is 4 bytes, so dbt.type_float() would lose precision there. -#}
{% macro type_float64() -%}
    double precision
{%- endmacro %}

{#- Timestamp literal from an ISO-8601 string with offset, e.g. '2024-05-01T00:00:00+00:00'. -#}
{% macro timestamptz_literal(iso_string) -%}
    cast('{{ iso_string }}' as timestamptz)
{%- endmacro %}
