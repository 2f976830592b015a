{{ config(unique_key=['symbol', 'bucket']) }}
-- log return per 1 day bucket
{{ log_returns('bars_1d', '1 day') }}
