"""The ccxt exchange source against a fake Binance server on loopback: ccxt's real client (URLs pointed
at the server) paginates, retries 429/5xx, and ``download`` resumes from the last stored bar."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from qt_pipeline.cli import app
from qt_pipeline.market.sources import source_from_settings, validate_batch
from qt_pipeline.market.sources.exchange import ExchangeSource, download
from qt_pipeline.storage.duckdb_store import DuckDBStore
from qt_pipeline_tests.market.fake_exchange import MINUTE_MS, FakeBinance, kline

DAY = pd.Timestamp("2024-01-01", tz="UTC")
T0 = DAY.value // 1_000_000


def src(fb: FakeBinance, **kw) -> ExchangeSource:
    kw.setdefault("retry_initial_s", 0.01)
    kw.setdefault("rate_limit_ms", 1)
    return ExchangeSource("binance", api_url=fb.url, **kw)


def test_fetch_paginates_retries_and_validates():
    with FakeBinance(T0, T0 + 2999 * MINUTE_MS) as fb:
        fb.faults = [429, 503]  # rate limited, then an outage: both retried
        s = src(fb)
        batch = s.fetch("BTCUSDT", DAY, DAY + pd.Timedelta(days=1))
        assert len(batch.frame) == 1440
        pages = [q for q in fb.requests]
        assert len(pages) == 4  # 2 failures + 1000 + 440
        assert [int(q["startTime"]) for q in pages[2:]] == [T0, T0 + 1000 * MINUTE_MS]
        res = validate_batch(batch, interval="1min", now=DAY + pd.Timedelta(days=2))
        assert res.rejected.empty, res.grouped_messages()
        first = kline("BTCUSDT", T0)
        row = res.accepted.iloc[0]
        assert (row["open"], row["high"], row["low"], row["close"], row["volume"]) == tuple(
            float(x) for x in first[1:6]
        )
        assert row["vwap"] == pytest.approx((row["high"] + row["low"] + row["close"]) / 3)
        assert row["trade_count"] == 0
        assert s.market_for("ETHUSDT") == "ETH/USDT"
        with pytest.raises(ValueError, match="has no market for 'DOGEEUR'; map it with QT_EXCHANGE_MARKETS"):
            s.market_for("DOGEEUR")


def test_persistent_failure_gives_up_with_the_exchange_message():
    import ccxt

    with FakeBinance(T0, T0 + 10 * MINUTE_MS) as fb:
        fb.faults = [503] * 10
        with pytest.raises(ccxt.OperationFailed, match="Internal error"):
            src(fb, retries=2).fetch("BTCUSDT", DAY, DAY + pd.Timedelta(hours=1))
        assert len(fb.requests) == 3


def test_download_resumes_from_the_last_stored_bar(tmp_path):
    store = DuckDBStore(tmp_path / "x.duckdb")
    try:
        with FakeBinance(T0, T0 + 599 * MINUTE_MS) as fb:  # the exchange has 600 minutes so far
            s = src(fb, page_limit=250)
            seen = []
            out = download(
                s,
                store,
                ["BTCUSDT"],
                DAY,
                DAY + pd.Timedelta(days=1),
                progress=lambda sym, done, total: seen.append((sym, done, total)),
                now=DAY + pd.Timedelta(days=2),
            )
            assert [(r.bars, r.resumed) for r in out] == [(600, False)]
            assert seen[0] == ("BTCUSDT", 0, 1440) and seen[-1] == ("BTCUSDT", 1440, 1440)
            fb.last_ms = T0 + 899 * MINUTE_MS  # 300 more minutes later
            fb.requests.clear()
            out = download(
                s, store, ["BTCUSDT"], DAY, DAY + pd.Timedelta(days=1), now=DAY + pd.Timedelta(days=2)
            )
            assert [(r.bars, r.resumed) for r in out] == [(300, True)]
            assert int(fb.requests[0]["startTime"]) == T0 + 600 * MINUTE_MS  # one minute after the last bar
        bars = store.read_bars("BTCUSDT")
        assert len(bars) == 900 and bars["timestamp"].is_unique
        assert bars["timestamp"].iloc[-1] == DAY + pd.Timedelta(minutes=899)
    finally:
        store.close()


def test_qt_download_cli_and_exchange_as_market_source(settings, monkeypatch):
    from qt_pipeline.config import get_settings

    with FakeBinance(T0, T0 + 119 * MINUTE_MS) as fb:
        monkeypatch.setenv("QT_EXCHANGE_API_URL", fb.url)
        get_settings.cache_clear()
        res = CliRunner().invoke(
            app,
            [
                "download",
                "--exchange",
                "binance",
                "--symbols",
                "BTCUSDT,ETHUSDT",
                "--start",
                "2024-01-01",
                "--end",
                "2024-01-01T02:00",
            ],
        )
        assert res.exit_code == 0, res.output
        assert "download" in res.output and "BTCUSDT" in res.output and "120" in res.output
        store = DuckDBStore(get_settings().resolved_duckdb_path)
        try:
            assert set(store.list_symbols()["rows"]) == {120}
        finally:
            store.close()
        monkeypatch.setenv("QT_MARKET_SOURCE", "exchange")
        get_settings.cache_clear()
        ex = source_from_settings()
        assert (
            isinstance(ex, ExchangeSource)
            and len(ex.fetch("ETHUSDT", DAY, DAY + pd.Timedelta(hours=1)).frame) == 60
        )
        bad = CliRunner().invoke(
            app, ["download", "--exchange", "nosuchex", "--symbols", "X", "--start", "2024-01-01"]
        )
        assert bad.exit_code == 2 and "unknown exchange 'nosuchex'" in bad.output
