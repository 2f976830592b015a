-- Per symbol and UTC day the three rollups hold the same bars, volume, first open and last close.
with d as (
    select symbol, bucket as day, bar_count, volume, open, close from {{ ref('bars_1d') }}
),
h as (
    select
        symbol,
        date_bin(interval '1 day', bucket, {{ bucket_origin() }}) as day,
        sum(bar_count) as bar_count,
        sum(volume) as volume,
        (array_agg(open order by bucket asc))[1] as open,
        (array_agg(close order by bucket desc))[1] as close
    from {{ ref('bars_1h') }}
    group by 1, 2
),
m as (
    select
        symbol,
        date_bin(interval '1 day', bucket, {{ bucket_origin() }}) as day,
        sum(bar_count) as bar_count,
        sum(volume) as volume
    from {{ ref('bars_5m') }}
    group by 1, 2
)
select d.symbol, d.day
from d
full join h on h.symbol = d.symbol and h.day = d.day
full join m on m.symbol = coalesce(d.symbol, h.symbol) and m.day = coalesce(d.day, h.day)
where d.symbol is null or h.symbol is null or m.symbol is null
   or d.bar_count <> h.bar_count or d.bar_count <> m.bar_count
   or abs(d.volume - h.volume) > 1e-9 * greatest(1.0, d.volume)
   or abs(d.volume - m.volume) > 1e-9 * greatest(1.0, d.volume)
   or d.open <> h.open or d.close <> h.close
