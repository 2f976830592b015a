{{ config(unique_key=['symbol', 'bucket']) }}
-- 5 minutes bars per symbol rolled up from ohlcv_bars (see macros/rollups.sql)
{{ rollup_bars('5 minutes') }}
