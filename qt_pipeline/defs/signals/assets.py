"""Signal assets: ``correlation_signals`` and ``market_regimes`` (daily partitions), computed together from
the bar store (``bar_store``: STORAGE_BACKEND decides, the output does not depend on it) by
:func:`qt_pipeline.signals.engine.compute_signals`, written to the signal store (Parquet per day under
``<data dir>/signals``), with their checks and pictures. Thin: the engines live in ``qt_pipeline.signals``."""

import base64
from collections.abc import Iterator
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from qt_pipeline.config import get_settings
from qt_pipeline.defs.resources import StorageResource
from qt_pipeline.defs.signals.keys import CORRELATION_SIGNALS_KEY, MARKET_REGIMES_KEY, SIGNALS_GROUP

SIGNAL_PARTITIONS = dg.DailyPartitionsDefinition(
    start_date=get_settings().partitions_start.isoformat(), end_offset=0, timezone="UTC"
)
COVERAGE_MIN = 0.95  # share of the window's hours that must have bars of every symbol

CHECKS = (
    dg.AssetCheckSpec(
        "coverage", asset=MARKET_REGIMES_KEY, description="Every symbol has a label for >= 95% of the hours."
    ),
    dg.AssetCheckSpec(
        "no_nan_after_warm_up",
        asset=MARKET_REGIMES_KEY,
        description="No unknown regime once the model has been fitted.",
    ),
    dg.AssetCheckSpec(
        "no_nan_after_warm_up",
        asset=CORRELATION_SIGNALS_KEY,
        description="No NaN correlation once each window is full.",
    ),
    dg.AssetCheckSpec(
        "correlations_in_range", asset=CORRELATION_SIGNALS_KEY, description="Every correlation is in [-1, 1]."
    ),
)


class SignalsConfig(dg.Config):
    symbols: list[str] | None = None  # None = QT_SYMBOLS


def _png_md(png: bytes, alt: str) -> dg.MetadataValue:
    return dg.MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def _coverage(
    regimes: pd.DataFrame, symbols: list[str], start: pd.Timestamp, end: pd.Timestamp
) -> dict[str, float]:
    hours = max(1, int((end - start) / pd.Timedelta(hours=1)))
    return {s: float((regimes["symbol"] == s).sum()) / hours for s in symbols}


def _after_warm_up_gaps(frame: pd.DataFrame, by: list[str], is_missing: pd.Series) -> int:
    """Rows missing a value although an earlier row of the same group had one."""
    seen = (~is_missing).groupby([frame[c] for c in by]).cummax()
    return int((seen & is_missing).sum())


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            CORRELATION_SIGNALS_KEY,
            deps=[dg.AssetKey("returns_1h"), dg.AssetKey("correlations_1h")],
            group_name=SIGNALS_GROUP,
            kinds={"python", "parquet"},
            description="Rolling pairwise correlations (1 day, 1 week of hours), average pairwise correlation, "
            "correlation regime (decoupled/coupled, hysteresis) and breaks; per symbol its mean correlation "
            "to the others (what the evolution's correlation_max gene filters on).",
        ),
        dg.AssetSpec(
            MARKET_REGIMES_KEY,
            deps=[dg.AssetKey("bars_1h")],
            group_name=SIGNALS_GROUP,
            kinds={"python", "parquet"},
            description="Composite regime per symbol and hour from trend, realized volatility, the market "
            "correlation regime and a hidden Markov model (forward-filtered: no look-ahead): codes 0 "
            "trend_up, 1 trend_down, 2 range, 3 high_vol (what the regime_mask gene filters on).",
        ),
    ],
    check_specs=CHECKS,
    partitions_def=SIGNAL_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.single_run(),  # one read and one engine pass for a whole range
    name="signal_engines",
)
def signal_engines(
    context: dg.AssetExecutionContext, config: SignalsConfig, bar_store: StorageResource
) -> Iterator[Any]:
    from qt_pipeline.signals.correlation import correlation_matrix
    from qt_pipeline.signals.engine import compute_signals
    from qt_pipeline.signals.plots import correlation_heatmap_png, regime_timeline_png
    from qt_pipeline.signals.store import SignalStore, day_range

    settings = get_settings()
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")
    symbols = sorted(config.symbols or settings.symbols)
    try:
        frames = compute_signals(bar_store.get_store(), symbols, start, end)
    except ValueError as exc:
        raise dg.Failure(description=str(exc)) from None
    days = day_range(start.date(), end.date())
    out = SignalStore.from_settings(settings)
    out.write_days("correlation_market", frames.market, days)
    out.write_days("correlation_pairs", frames.pairs, days)
    out.write_days("correlation_symbols", frames.symbols, days)
    out.write_days("regimes", frames.regimes, days)
    context.log.info(f"signals for {len(days)} day(s) from {start:%Y-%m-%d} written to {out.root}")

    reg, pairs, market = frames.regimes, frames.pairs, frames.market
    labelled = reg[reg["regime"] >= 0]
    counts = labelled["regime_name"].value_counts().to_dict()
    last_bucket = pairs["bucket"].max() if len(pairs) else None
    heat_md = None
    if last_bucket is not None:
        win = int(pairs["window"].min())
        matrix = correlation_matrix(pairs, last_bucket, win)
        heat_md = _png_md(
            correlation_heatmap_png(matrix, title=f"{win} h correlation at {last_bucket:%Y-%m-%d %H:%M}"),
            "correlation",
        )
    timeline = regime_timeline_png(reg, market, title=f"{start:%Y-%m-%d} .. {end:%Y-%m-%d}")

    corr_meta: dict[str, Any] = {
        "rows_pairs": dg.MetadataValue.int(len(pairs)),
        "avg_corr_mean": dg.MetadataValue.float(
            float(np.nanmean(market.filter(like="avg_corr_").to_numpy())) if len(market) else float("nan")
        ),
        "coupled_hours": dg.MetadataValue.int(int((market["corr_regime"] == 1).sum())),
        "breaks": dg.MetadataValue.int(int(market["corr_break"].sum())),
        "path": dg.MetadataValue.path(str(out.root / "correlation_pairs")),
    }
    if heat_md is not None:
        corr_meta["heat_map"] = heat_md
    yield dg.MaterializeResult(asset_key=CORRELATION_SIGNALS_KEY, metadata=corr_meta)
    yield dg.MaterializeResult(
        asset_key=MARKET_REGIMES_KEY,
        metadata={
            "rows": dg.MetadataValue.int(len(reg)),
            "labelled": dg.MetadataValue.int(len(labelled)),
            "regime_counts": dg.MetadataValue.json({k: int(v) for k, v in counts.items()}),
            "timeline": _png_md(timeline, "regimes"),
            "path": dg.MetadataValue.path(str(out.root / "regimes")),
        },
    )

    # --- checks -------------------------------------------------------------------------------------
    now = pd.Timestamp.now(tz="UTC").floor("h")
    cov = _coverage(reg, symbols, start, min(end, max(start + pd.Timedelta(hours=1), now)))
    low = {s: round(c, 3) for s, c in cov.items() if c < COVERAGE_MIN}
    yield dg.AssetCheckResult(
        asset_key=MARKET_REGIMES_KEY,
        check_name="coverage",
        passed=not low,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "coverage": dg.MetadataValue.json({s: round(c, 3) for s, c in cov.items()}),
            "below_95pct": dg.MetadataValue.json(low),
        },
        description=None if not low else f"hours with a label below {COVERAGE_MIN:.0%}: {low}",
    )
    gaps = _after_warm_up_gaps(reg, ["symbol"], reg["regime"] < 0) if len(reg) else 0
    warm = int((reg["regime"] < 0).sum()) - gaps if len(reg) else 0
    yield dg.AssetCheckResult(
        asset_key=MARKET_REGIMES_KEY,
        check_name="no_nan_after_warm_up",
        passed=gaps == 0,
        metadata={"unknown_after_warm_up": gaps, "warm_up_rows": warm},
    )
    pgaps = (
        _after_warm_up_gaps(pairs, ["window", "symbol_a", "symbol_b"], pairs["correlation"].isna())
        if len(pairs)
        else 0
    )
    yield dg.AssetCheckResult(
        asset_key=CORRELATION_SIGNALS_KEY,
        check_name="no_nan_after_warm_up",
        passed=pgaps == 0,
        metadata={"nan_after_warm_up": pgaps, "warm_up_rows": int(pairs["correlation"].isna().sum()) - pgaps},
    )
    values = np.concatenate(
        [
            pairs["correlation"].to_numpy(dtype=float),
            market.filter(like="avg_corr_").to_numpy(dtype=float).ravel(),
        ]
    )
    finite = values[~np.isnan(values)]
    bad = int(((finite < -1.0) | (finite > 1.0)).sum())
    yield dg.AssetCheckResult(
        asset_key=CORRELATION_SIGNALS_KEY,
        check_name="correlations_in_range",
        passed=bad == 0,
        metadata={
            "out_of_range": bad,
            "min": float(finite.min()) if len(finite) else float("nan"),
            "max": float(finite.max()) if len(finite) else float("nan"),
        },
    )


signals_job = dg.define_asset_job(
    "signals_job",
    selection=dg.AssetSelection.assets(CORRELATION_SIGNALS_KEY, MARKET_REGIMES_KEY),
    partitions_def=SIGNAL_PARTITIONS,
    description="Correlation and regime engines for one day (or a range, in one run).",
)

signals_schedule = dg.build_schedule_from_partitioned_job(
    signals_job,
    hour_of_day=0,
    minute_of_hour=40,
    name="signals_schedule",
    description="Daily: the signals of the day that just closed.",
)
