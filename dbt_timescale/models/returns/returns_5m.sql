{{ config(unique_key=['symbol', 'bucket']) }}
-- log return per 5 minutes bucket
{{ log_returns('bars_5m', '5 minutes') }}
