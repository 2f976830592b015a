{#- Every rollup bucket equals a fresh aggregation of the source bars: same bar count, volume sum (relative
    1e-9), first open and last close; and no source bucket is missing from the rollup. Catches late bars
    that fell outside the incremental window. -#}
{% test rollup_matches_source(model, step) %}
with src as (
    select
        symbol,
        date_bin(interval '{{ step }}', "timestamp", {{ bucket_origin() }}) as bucket,
        count(*) as bar_count,
        sum(volume) as volume,
        (array_agg(open order by "timestamp" asc))[1] as open,
        (array_agg(close order by "timestamp" desc))[1] as close
    from {{ source('central', 'ohlcv_bars') }}
    group by 1, 2
)
select s.symbol, s.bucket, s.bar_count as source_bars, m.bar_count as rollup_bars
from src s
left join {{ model }} m on m.symbol = s.symbol and m.bucket = s.bucket
where m.symbol is null
   or m.bar_count <> s.bar_count
   or abs(m.volume - s.volume) > 1e-9 * greatest(1.0, abs(s.volume))
   or m.open <> s.open
   or m.close <> s.close
{% endtest %}
