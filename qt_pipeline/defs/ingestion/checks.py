"""``raw_ohlcv_bar_quality``: the Great Expectations bar suite on a stored raw_ohlcv partition.

The row-count bounds come from the symbol's market calendar (:func:`~qt_pipeline.market.quality.
expected_row_range`): a weekend or holiday may be empty, a trading day needs ``QT_QUALITY_MIN_BARS`` (or
the source's ``min_bars``). It reads the partition back from the local store (so it sees what is really stored, including rows
that bypassed validation) and runs :func:`qt_pipeline.market.quality.run_bar_quality` (GX imported lazily
there). Any failed expectation fails the check with severity ERROR.

The check is a check spec of the ``raw_ohlcv`` asset, evaluated per partition *inside the asset's step*:
a ranged (single-run) backfill checks every partition it wrote, and the check reads through the step's
own DuckDB connection (the writer pool slot the step already holds), never opening the file beside it.
A checks-only run (the asset is subsettable) re-evaluates stored partitions without ingesting.

Partitioned asset checks are a *preview* feature of dagster 1.13 (a PreviewWarning at definition time,
silenced here on purpose).
"""

import warnings
from typing import Any

import dagster as dg

from qt_pipeline.config import get_settings
from qt_pipeline.defs.ingestion.partitions import RAW_OHLCV_PARTITIONS, partition_window
from qt_pipeline.redaction import redact

RAW_OHLCV_KEY = dg.AssetKey("raw_ohlcv")
BAR_QUALITY = "raw_ohlcv_bar_quality"

with warnings.catch_warnings():
    warnings.simplefilter("ignore", dg.PreviewWarning)
    RAW_OHLCV_BAR_QUALITY = dg.AssetCheckSpec(
        BAR_QUALITY,
        asset=RAW_OHLCV_KEY,
        partitions_def=RAW_OHLCV_PARTITIONS,
        description="Great Expectations bar suite on the stored partition (non-null, prices > 0, "
        "OHLC/vwap ranges, unique (symbol, timestamp), interval grid, row count).",
    )
raw_ohlcv_bar_quality = RAW_OHLCV_BAR_QUALITY.key  # AssetCheckKey: select it to run the check alone


def _json_safe(value: object) -> object:
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else str(value)
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return str(value)


def bar_quality(context: Any, key: Any, store: Any) -> dg.AssetCheckEvaluation:
    """Evaluate the suite on the stored partition ``key`` read through ``store`` (the step's store)."""
    from qt_pipeline.market.quality import expected_row_range, run_bar_quality

    settings = get_settings()
    symbol, start, end = partition_window(key)
    bars = store.read_bars(symbol, start, end)
    # the symbol's market calendar decides how many bars the day must have: none on a weekend/holiday
    min_rows, max_rows, calendar, interval = expected_row_range(symbol, start.date(), settings)
    report = run_bar_quality(bars, interval=interval, min_rows=min_rows, max_rows=max_rows)
    failures = report.describe_failures()
    for line in failures:
        context.log.error(f"{symbol} {start.date()}: {line}")
    return dg.AssetCheckEvaluation(
        asset_key=RAW_OHLCV_KEY,
        check_name=BAR_QUALITY,
        partition=str(key),
        passed=report.success,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "rows_checked": dg.MetadataValue.int(report.rows),
            "calendar": dg.MetadataValue.text(calendar),
            "expected_rows": dg.MetadataValue.text(f"[{min_rows}, {max_rows}]"),
            "expectations": dg.MetadataValue.int(len(report.outcomes)),
            "failed_expectations": dg.MetadataValue.int(len(report.failed)),
            "failures": dg.MetadataValue.json(
                [
                    {
                        "expectation": o.name,
                        "type": o.expectation,
                        "unexpected_count": o.unexpected_count,
                        "observed": _json_safe(o.observed),
                        "examples": _json_safe(o.examples[:3]),
                    }
                    for o in report.failed
                ]
            ),
            "summary": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures) or "all expectations met"),
            "storage_location": dg.MetadataValue.text(redact(store.location)),
        },
    )
