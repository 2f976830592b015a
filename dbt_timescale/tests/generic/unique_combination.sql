{#- The combination of `columns` is unique (dbt-core has no multi-column unique test; dbt_utils would need
    a package download). -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
