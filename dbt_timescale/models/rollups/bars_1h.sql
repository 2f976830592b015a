{{ config(unique_key=['symbol', 'bucket']) }}
-- 1 hour bars per symbol rolled up from ohlcv_bars (see macros/rollups.sql)
{{ rollup_bars('1 hour') }}
