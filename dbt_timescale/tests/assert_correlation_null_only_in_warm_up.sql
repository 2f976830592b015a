-- A correlation is NULL exactly while its window is not yet full (n < window), except where a return is
-- constant over the window (zero variance), which never happens with live prices.
select *
from {{ ref('correlations_1h') }}
where (n >= window_buckets and correlation is null)
   or (n < window_buckets and correlation is not null)
