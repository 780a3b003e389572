{% macro empty_array(element_type) -%}
    {{ return(adapter.dispatch('empty_array', 'recsys')(element_type)) }}
{%- endmacro %}

{% macro default__empty_array(element_type) -%}
    cast([] as {{ element_type }}[])
{%- endmacro %}

{% macro postgres__empty_array(element_type) -%}
    cast(array[] as {{ element_type }}[])
{%- endmacro %}
