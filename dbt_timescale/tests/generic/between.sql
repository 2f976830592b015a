{#- Non-null values of the column lie in [lower, upper]. -#}
{% test between(model, column_name, lower, upper) %}
select *
from {{ model }}
where {{ column_name }} < {{ lower }} or {{ column_name }} > {{ upper }}
{% endtest %}
