{{ config(unique_key=['symbol', 'bucket']) }}
-- 1 day bars per symbol rolled up from ohlcv_bars (see macros/rollups.sql)
{{ rollup_bars('1 day') }}
