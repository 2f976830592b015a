"""Evolution uses the signals: stored signals reach MarketData aligned without look-ahead, the regime and
correlation genes change what a strategy does, and the filter ablation compares with/without filters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from qt_pipeline.market.sources.synthetic import SyntheticMarket
from qt_pipeline.signals.ablation import ablation_markdown, filter_ablation
from qt_pipeline.signals.engine import SignalParams, compute_signals
from qt_pipeline.signals.feed import SignalFeed, describe_filters
from qt_pipeline.signals.regime import RegimeParams
from qt_pipeline.signals.store import SignalStore, day_range

SYMBOLS = ["BTCUSD", "ETHUSD", "SOLUSD"]
PARAMS = SignalParams(
    regime=RegimeParams(min_train_hours=48, train_hours=120, refit_hours=24, burn_in_hours=12)
)
START, END = pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-03-09", tz="UTC")


@pytest.fixture
def stored(settings):
    from qt_pipeline.storage import get_storage

    m = SyntheticMarket(9, interval="5min")
    store = get_storage("local", settings)
    for s in SYMBOLS:
        store.write_bars(m.bars(s, START, END))
    frames = compute_signals(store, SYMBOLS, START, END, PARAMS)
    sig = SignalStore.from_settings(settings)
    days = day_range(START.date(), END.date())
    sig.write_days("regimes", frames.regimes, days)
    sig.write_days("correlation_symbols", frames.symbols, days)
    yield store, sig, frames
    store.close()


def test_stored_signals_reach_market_data_without_look_ahead(stored):
    from qt_pipeline.evolution.config import parse_config
    from qt_pipeline.evolution.runner import prepare_data

    store, sig, frames = stored
    feed = SignalFeed.from_store(sig, START, END)
    assert feed is not None and len(feed.regimes) == len(frames.regimes)
    cfg = parse_config(
        {
            "symbols": SYMBOLS,
            "start": "2024-03-01",
            "end": "2024-03-09",
            "train_end": "2024-03-07",
            "folds": 1,  # one train/test split at train_end (walk-forward folds are the default)
            "min_bars": 100,
        }
    )
    data = prepare_data(cfg, store, feed)
    test = list(data.oos_plan.segments[0].datasets)
    for d in data.train + test:
        assert d.regime is not None and d.correlation is not None and len(d.regime) == len(d)
    d = test[1]  # ETHUSD, test window
    reg = frames.regimes[frames.regimes["symbol"] == "ETHUSD"].set_index("bucket")["regime"]
    ts = pd.to_datetime(d.timestamp, utc=True)
    for i in (5, 11, 12, 100, len(d) - 1):  # 5-min bars: bar i closes at ts + 5 min
        closed = reg[reg.index + pd.Timedelta("1h") <= ts[i] + pd.Timedelta("5min")]
        assert d.regime[i] == closed.iloc[-1], i
    assert (test[0].regime >= 0).mean() > 0.9
    assert np.isfinite(test[0].correlation).mean() > 0.9
    assert SignalFeed.from_store(SignalStore(sig.root / "nowhere"), START, END) is None


def test_filter_genes_act_on_the_series_and_the_ablation_compares_them(stored):
    from qt_pipeline.evolution.backtest import Costs, MarketData, infer_periods_per_year
    from qt_pipeline.evolution.genome import genome_from_dict, genome_to_dict, random_population

    store, sig, frames = stored
    feed = SignalFeed.from_frames(frames)
    test = []
    for s in SYMBOLS:
        b = store.read_bars(s, pd.Timestamp("2024-03-05", tz="UTC"), END)
        regime, corr = feed.for_bars(s, b["timestamp"])
        test.append(MarketData.from_frame(b, symbol=s, regime=regime, correlation=corr))
    ppy = infer_periods_per_year(test[0].timestamp)
    rng = np.random.default_rng(3)
    checked = 0
    for vec in random_population(rng, 40):
        g = genome_to_dict(vec)
        g.update(regime_mask=0b0100, correlation_max=0.3)  # range regime only, |corr| <= 0.3
        table = filter_ablation(genome_from_dict(g), test, Costs(1.0, 1.0), ppy)
        with_f, without = table.iloc[0], table.iloc[1]
        if without["n_trades"] >= 3:
            assert with_f["n_trades"] < without["n_trades"]  # the filters bind on real series
            checked += 1
            if checked == 3:
                break
    assert checked == 3
    assert list(table["variant"]) == ["with filters", "without filters"]
    md = ablation_markdown(table)
    assert "range regime" in md and "0.30" in md


def test_filters_are_described_in_words():
    assert describe_filters(0b1001, 0.0) == "enters only in trend_up / high_vol regimes"
    assert "within ±0.45" in describe_filters(0, 0.45)
    assert describe_filters(0, 0.0) == "no regime or correlation filter"


def test_the_evolution_report_names_the_regimes_a_strategy_enters_in(stored, tmp_path):
    """A real (serial) run on the stored signals: every report row whose strategy has a regime filter names
    the regimes in words (trend_up, range, ...), never as the codes 0..3."""
    from qt_pipeline.evolution.config import parse_config
    from qt_pipeline.evolution.genome import decode
    from qt_pipeline.evolution.ray_eval import SerialEvaluator
    from qt_pipeline.evolution.runner import run_evolution
    from qt_pipeline.evolution.state import DuckDBStateStore
    from qt_pipeline.regime_codes import REGIME_NAMES

    store, sig, _ = stored
    cfg = parse_config(
        {"symbols": SYMBOLS[:2], "start": "2024-03-04", "end": "2024-03-09", "folds": 1,
         "population_size": 24, "generations": 2, "seed": 5, "min_bars": 100, "hall_of_fame_size": 8,
         "use_ray": False, "fitness": {"min_trades": 1, "min_trades_per_fold": 1}}
    )  # fmt: skip
    state = DuckDBStateStore(tmp_path / "evo.duckdb")
    try:
        result = run_evolution(
            cfg, store, state, SerialEvaluator(), signals=SignalFeed.from_store(sig, START, END)
        )
    finally:
        state.close()
    table = result.report.table
    masks = [decode(g).regime_mask for g in result.hall_of_fame.genomes]
    assert len(table) == len(masks) and any(masks)
    for mask, text in zip(masks, table["description"], strict=True):
        named = [n for k, n in enumerate(REGIME_NAMES) if mask >> k & 1]
        if named:
            assert f"enters only in {' / '.join(named)} regime" in text, text
        assert "regime(s)" not in text
        assert not any(f"regime {k}" in text for k in range(len(REGIME_NAMES))), text
