"""Asset keys the signals domain depends on or produces. The central bars asset is named here ONLY: a
rename of ``central_ohlcv`` is a one-line change."""

import dagster as dg

CENTRAL_BARS_KEY = dg.AssetKey("central_ohlcv")
CORRELATION_SIGNALS_KEY = dg.AssetKey("correlation_signals")
MARKET_REGIMES_KEY = dg.AssetKey("market_regimes")
SIGNAL_KEYS = (CORRELATION_SIGNALS_KEY, MARKET_REGIMES_KEY)
DBT_GROUP = "rollups"
SIGNALS_GROUP = "signals"
