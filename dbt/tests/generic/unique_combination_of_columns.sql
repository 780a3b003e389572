{#-
  Fails on every combination of the given columns that occurs more than once (a composite primary key).
  Usage in a model's .yml:
    data_tests:
      - unique_combination_of_columns:
          arguments:
            combination_of_columns: [user_id, feature_date]
-#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

{%- set columns = combination_of_columns | join(', ') %}

select
    {{ columns }},
    count(*) as occurrences
from {{ model }}
group by {{ columns }}
having count(*) > 1

{% endtest %}
