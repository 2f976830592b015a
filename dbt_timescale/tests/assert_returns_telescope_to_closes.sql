-- Log returns telescope: per symbol, the sum of hourly log returns equals ln(last close / first close).
with r as (
    select symbol, sum(log_return) as total from {{ ref('returns_1h') }} group by symbol
),
c as (
    select
        symbol,
        ln((array_agg(close order by bucket desc))[1] / (array_agg(close order by bucket asc))[1]) as total
    from {{ ref('bars_1h') }}
    group by symbol
)
select c.symbol, c.total as from_closes, r.total as from_returns
from c
left join r on r.symbol = c.symbol
where abs(coalesce(r.total, 0) - c.total) > 1e-9
