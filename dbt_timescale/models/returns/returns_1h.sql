{{ config(unique_key=['symbol', 'bucket']) }}
-- log return per 1 hour bucket
{{ log_returns('bars_1h', '1 hour') }}
