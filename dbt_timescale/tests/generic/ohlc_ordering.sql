{#- low <= open, close, vwap <= high for every rolled-up bar. -#}
{% test ohlc_ordering(model) %}
select *
from {{ model }}
where not (
    low <= high
    and low <= least(open, close) and high >= greatest(open, close)
    and vwap between low and high
    and volume >= 0 and bar_count >= 1
)
{% endtest %}
