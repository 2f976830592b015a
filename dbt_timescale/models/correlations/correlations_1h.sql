{{ config(unique_key=['bucket', 'symbol_a', 'symbol_b', 'window_buckets']) }}
{#- Rolling Pearson correlation of hourly log returns for every symbol pair (symbol_a < symbol_b) and every
    window in var('corr_windows'): over the last `window` buckets both symbols have, including this one.
    NULL until the window is full (warm-up). Incremental runs re-read the largest window before the cutoff
    so every recomputed row sees a full window. -#}
{%- set windows = var('corr_windows') -%}
{%- set max_window = windows | max -%}
with r as (
    select symbol, bucket, log_return
    from {{ ref('returns_1h') }}
    {% if is_incremental() %}
    where bucket >= {{ incremental_cutoff('1 hour', max_window ~ ' hours') }}
    {% endif %}
),
pairs as (
    select a.bucket, a.symbol as symbol_a, b.symbol as symbol_b, a.log_return as ra, b.log_return as rb
    from r a
    join r b on a.bucket = b.bucket and a.symbol < b.symbol
),
rolled as (
    {% for w in windows %}
    select
        bucket,
        symbol_a,
        symbol_b,
        {{ w }}::int as window_buckets,
        count(*) over win as n,
        corr(ra, rb) over win as raw_corr
    from pairs
    window win as (partition by symbol_a, symbol_b order by bucket rows between {{ w - 1 }} preceding and current row)
    {% if not loop.last %}union all{% endif %}
    {% endfor %}
)
select
    bucket,
    symbol_a,
    symbol_b,
    window_buckets,
    n::int as n,
    -- full windows only; clamp the last-bit rounding that can leave |corr| a hair above 1
    case when n >= window_buckets then greatest(-1.0, least(1.0, raw_corr)) end as correlation
from rolled
{% if is_incremental() %}
where bucket >= {{ incremental_cutoff('1 hour') }}
{% endif %}
