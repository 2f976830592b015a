"""Crypto exchanges as a market data source, through `ccxt <https://github.com/ccxt/ccxt>`_.

:class:`ExchangeSource` is a :class:`MarketDataSource` (``QT_MARKET_SOURCE=exchange``) and the engine of
``qt download``. It uses ccxt's unified ``fetch_ohlcv``:

* **rate limits** — ccxt's own throttle (``enableRateLimit``; the exchange's documented ``rateLimit``
  unless ``rate_limit_ms`` overrides it);
* **pagination** — pages of ``page_limit`` bars, each starting one interval after the last bar received,
  until the end of the range or an empty page;
* **retries** — transient failures (``ccxt.OperationFailed``: timeouts, HTTP 429/5xx, DDoS protection) are
  retried with exponential backoff (tenacity); anything else (bad symbol, auth) fails at once with the
  exchange's message;
* **resume** — :func:`download` starts each symbol one interval after its last stored bar and stores page
  by page, so an interrupted download continues where it stopped.

Bars are validated like every other source. ccxt's OHLCV has no vwap or trade count: ``vwap`` is derived
as the typical price and ``trade_count`` stored as 0 (= not reported), as for landing files without them.
Symbols are the pipeline's (``BTCUSDT``); ``markets`` maps them to exchange markets (``BTC/USDT``) when the
exchange's own market id does not match.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import pandas as pd

from qt_pipeline.market.layout import SourceLayout
from qt_pipeline.market.sources.base import MarketDataSource, RawBatch, utc_timestamp

log = logging.getLogger(__name__)


def _rebase(urls: object, base: str) -> object:
    """``urls`` (ccxt's nested url dict) with scheme and host replaced by those of ``base``."""
    if isinstance(urls, dict):
        return {k: _rebase(v, base) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith("http"):
        b = urlsplit(base)
        u = urlsplit(urls)
        return urlunsplit((b.scheme, b.netloc, u.path, u.query, u.fragment))
    return urls


class ExchangeSource(MarketDataSource):
    name = "exchange"

    def __init__(
        self,
        exchange_id: str = "binance",
        *,
        markets: Mapping[str, str] | None = None,
        timeframe: str = "1m",
        api_url: str | None = None,
        page_limit: int = 1000,
        retries: int = 5,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0,
        rate_limit_ms: int | None = None,
        timeout_ms: int = 30_000,
    ):
        import ccxt

        cls = getattr(ccxt, exchange_id, None)
        if exchange_id not in ccxt.exchanges or cls is None:
            raise ValueError(
                f"unknown exchange {exchange_id!r}; use a ccxt exchange id such as binance, kraken, coinbase, "
                "bitstamp (QT_EXCHANGE / --exchange)"
            )
        config: dict = {"enableRateLimit": True, "timeout": timeout_ms}
        if exchange_id.startswith("binance"):
            config["options"] = {"fetchMarkets": {"types": ["spot"]}}
        self.exchange = cls(config)
        if rate_limit_ms is not None:
            self.exchange.rateLimit = rate_limit_ms
        if api_url:
            self.exchange.urls["api"] = _rebase(self.exchange.urls["api"], api_url)
        if not self.exchange.has.get("fetchOHLCV"):
            raise ValueError(f"exchange {exchange_id!r} has no OHLCV history in ccxt; choose another")
        self.exchange_id = exchange_id
        self.timeframe = timeframe
        try:
            self.step_ms = int(self.exchange.parse_timeframe(timeframe) * 1000)
        except Exception:  # noqa: BLE001 - ccxt raises NotSupported/ValueError
            raise ValueError(
                f"timeframe {timeframe!r} is not a ccxt timeframe such as 1m, 5m, 1h, 1d"
            ) from None
        tfs = getattr(self.exchange, "timeframes", None) or {}
        if tfs and timeframe not in tfs:
            raise ValueError(f"{exchange_id} has no timeframe {timeframe!r}; it has {sorted(tfs)}")
        self.markets_map = {k.strip().upper(): v.strip() for k, v in (markets or {}).items()}
        self.page_limit = page_limit
        self.retries = retries
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.layout = SourceLayout(
            name=f"exchange:{exchange_id}",
            calendar="24/7",
            interval=f"{self.step_ms // 1000}s",
            vwap="typical",
            trade_count="zero",
        )

    @classmethod
    def from_settings(cls, settings=None) -> ExchangeSource:
        from qt_pipeline.config import get_settings

        settings = settings or get_settings()
        return cls(
            settings.exchange_id,
            markets=settings.exchange_markets,
            timeframe=settings.exchange_timeframe,
            api_url=settings.exchange_api_url,
        )

    def describe(self) -> str:
        return f"exchange:{self.exchange_id} timeframe={self.timeframe}"

    # --- markets --------------------------------------------------------------------------------------
    def _retrying(self, fn: Callable, *args, **kwargs):
        import ccxt
        from tenacity import (
            Retrying,
            before_sleep_log,
            retry_if_exception_type,
            stop_after_attempt,
            wait_random_exponential,
        )

        for attempt in Retrying(
            retry=retry_if_exception_type(ccxt.OperationFailed),
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_random_exponential(multiplier=self.retry_initial_s, max=self.retry_max_s),
            before_sleep=before_sleep_log(log, logging.WARNING),
            reraise=True,
        ):
            with attempt:
                return fn(*args, **kwargs)
        raise AssertionError("unreachable")

    def market_for(self, symbol: str) -> str:
        """The exchange's unified market symbol (``BTC/USDT``) for a pipeline symbol (``BTCUSDT``)."""
        sym = symbol.strip().upper()
        if sym in self.markets_map:
            return self.markets_map[sym]
        markets = self._retrying(self.exchange.load_markets)
        if sym in markets:
            return sym
        for m in markets.values():
            names = (str(m.get("id", "")).upper(), f"{m.get('base')}{m.get('quote')}".upper())
            if sym in names and m.get("spot", True):
                return m["symbol"]
        compact = sym.replace("/", "").replace("-", "").replace("_", "")
        for m in markets.values():
            if f"{m.get('base')}{m.get('quote')}".upper() == compact:
                return m["symbol"]
        raise ValueError(
            f"{self.exchange_id} has no market for {symbol!r}; map it with QT_EXCHANGE_MARKETS "
            f"(e.g. '{sym}=BTC/USDT')"
        )

    def symbols(self) -> list[str]:
        markets = self._retrying(self.exchange.load_markets)
        return sorted(str(m["id"]).upper() for m in markets.values() if m.get("spot"))

    # --- bars -----------------------------------------------------------------------------------------
    def pages(self, symbol: str, start_ms: int, end_ms: int) -> Iterator[list[list]]:
        """Pages of raw ccxt candles ``[ms, o, h, l, c, v]`` with ``start_ms <= ms < end_ms``."""
        market = self.market_for(symbol)
        since = start_ms
        while since < end_ms:
            page = self._retrying(
                self.exchange.fetch_ohlcv, market, self.timeframe, since=since, limit=self.page_limit
            )
            page = [r for r in page if r and since <= int(r[0]) < end_ms]
            if not page:
                return
            yield page
            since = int(page[-1][0]) + self.step_ms

    def to_batch(self, symbol: str, rows: list[list], first_line: int = 1) -> RawBatch:
        """Raw candles as a leaf batch (tz-aware UTC timestamps; vwap/trade_count derived)."""
        arr = np.array([r[:6] for r in rows], dtype=object) if rows else np.empty((0, 6), dtype=object)
        frame = pd.DataFrame(
            {
                "symbol": pd.array([symbol.strip().upper()] * len(rows), dtype="str"),
                "timestamp": pd.to_datetime(arr[:, 0].astype(np.int64), unit="ms", utc=True),
                **{
                    c: pd.to_numeric(pd.Series(arr[:, i + 1]), errors="coerce").astype("float64")
                    for i, c in enumerate(("open", "high", "low", "close", "volume"))
                },
            }
        )
        return RawBatch(
            frame,
            f"{self.exchange_id}:{self.market_for(symbol)}",
            np.arange(first_line, first_line + len(rows), dtype=np.int64),
            layout=self.layout,
        )

    def fetch(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> RawBatch:
        start_ms = utc_timestamp(start, "start").value // 1_000_000
        end_ms = utc_timestamp(end, "end").value // 1_000_000
        rows = [r for page in self.pages(symbol, start_ms, end_ms) for r in page]
        return self.to_batch(symbol, rows)


@dataclass
class DownloadResult:
    symbol: str
    start: pd.Timestamp  # where this run started (after resuming)
    bars: int
    rejected: int
    resumed: bool


def download(
    source: ExchangeSource,
    store,
    symbols: list[str],
    start: pd.Timestamp,
    end: pd.Timestamp,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    now: pd.Timestamp | None = None,
) -> list[DownloadResult]:
    """Download ``symbols`` in ``[start, end)`` into ``store`` page by page, validated; each symbol
    resumes one interval after its last stored bar. ``progress(symbol, done_bars, total_bars)``."""
    from qt_pipeline.market.sources import validate_batch

    start = utc_timestamp(start, "start")
    end = utc_timestamp(end, "end")
    held = store.list_symbols()
    last = {str(r.symbol): r.last_timestamp for r in held.itertuples(index=False)}
    step = pd.Timedelta(milliseconds=source.step_ms)
    out = []
    for symbol in symbols:
        sym = symbol.strip().upper()
        begin, resumed = start, False
        if sym in last and start <= last[sym] < end:
            begin, resumed = last[sym] + step, True
        total = max(0, int((end - begin) // step))
        done = bars = rejected = 0
        if progress:
            progress(sym, 0, total)
        line = 1
        for page in source.pages(sym, begin.value // 1_000_000, end.value // 1_000_000):
            batch = source.to_batch(sym, page, first_line=line)
            line += len(page)
            res = validate_batch(batch, interval=step, now=now)
            if len(res.accepted):
                store.write_bars(res.accepted)
            if len(res.rejected):
                store.write_rejects(res.rejected)
            bars += len(res.accepted)
            rejected += int(res.summary()["rejected_rows"])
            done = min(total, int((int(page[-1][0]) - begin.value // 1_000_000) // source.step_ms) + 1)
            if progress:
                progress(sym, done, total)
        if progress:
            progress(sym, total, total)
        out.append(DownloadResult(sym, begin, bars, rejected, resumed))
    return out


__all__ = ["DownloadResult", "ExchangeSource", "download"]
