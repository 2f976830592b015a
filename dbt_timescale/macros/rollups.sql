{#- Bucket origin shared with qt_pipeline.signals.rollup.ORIGIN: date_bin(step, ts, 2000-01-01 UTC) -#}
{% macro bucket_origin() %}timestamptz '2000-01-01 00:00:00+00'{% endmacro %}

{% macro source_schema() -%}
  {{ var('source_schema') if var('source_schema') else target.schema }}
{%- endmacro %}

{#- Lower bound of an incremental run: the newest stored bucket minus the late-data window (and `extra`),
    aligned to the bucket grid; -infinity when the table is empty. -#}
{% macro incremental_cutoff(step, extra='0 seconds') %}
  (select coalesce(
      date_bin(interval '{{ step }}', max(bucket) - interval '{{ var("late_window_hours") }} hours' - interval '{{ extra }}', {{ bucket_origin() }}),
      timestamptz '-infinity')
   from {{ this }})
{% endmacro %}

{#- OHLCV rollup of ohlcv_bars to `step` buckets: first open, max high, min low, last close, summed volume
    and trades, volume-weighted vwap (mean vwap when no volume traded), bars per bucket. -#}
{% macro rollup_bars(step) %}
with src as (
    select
        symbol,
        "timestamp",
        open, high, low, close, volume, vwap, trade_count,
        date_bin(interval '{{ step }}', "timestamp", {{ bucket_origin() }}) as bucket
    from {{ source('central', 'ohlcv_bars') }}
    {% if is_incremental() %}
    where "timestamp" >= {{ incremental_cutoff(step) }}
    {% endif %}
)
select
    symbol,
    bucket,
    (array_agg(open order by "timestamp" asc))[1] as open,
    max(high) as high,
    min(low) as low,
    (array_agg(close order by "timestamp" desc))[1] as close,
    sum(volume) as volume,
    least(max(high), greatest(min(low),
        coalesce(sum(vwap * volume) / nullif(sum(volume), 0), avg(vwap)))) as vwap,
    sum(trade_count)::bigint as trade_count,
    count(*)::bigint as bar_count,
    min("timestamp") as first_bar_at,
    max("timestamp") as last_bar_at
from src
group by symbol, bucket
{% endmacro %}

{#- Log return of each bucket against the symbol's previous bucket; `intervals` = how many steps apart
    the two closes are (1 unless bars are missing). -#}
{% macro log_returns(rollup_model, step) %}
with b as (
    select symbol, bucket, close
    from {{ ref(rollup_model) }}
    {% if is_incremental() %}
    where bucket >= {{ incremental_cutoff(step, step) }}
    {% endif %}
),
r as (
    select
        symbol,
        bucket,
        lag(bucket) over w as prev_bucket,
        ln(close / lag(close) over w) as log_return
    from b
    window w as (partition by symbol order by bucket)
)
select
    symbol,
    bucket,
    log_return,
    round(extract(epoch from (bucket - prev_bucket)) / extract(epoch from interval '{{ step }}'))::int as intervals
from r
where prev_bucket is not null
{% if is_incremental() %}
  and bucket >= {{ incremental_cutoff(step) }}
{% endif %}
{% endmacro %}
