"""The ``raw_ohlcv`` asset: one UTC day of one symbol, fetched, validated and stored in the local DuckDB.

Thin wiring: fetching and validation are :func:`qt_pipeline.market.sources.ingest_batches`, storage is the
``local_store`` resource. Re-materialising a partition is idempotent: bars are upserted on
``(symbol, timestamp)`` and rejects on ``(source, line, reason)``.
"""

import json
from typing import Any

import dagster as dg
import pandas as pd

from qt_pipeline.config import get_settings
from qt_pipeline.defs.ingestion.checks import (
    RAW_OHLCV_BAR_QUALITY,
    RAW_OHLCV_KEY,
    bar_quality,
    raw_ohlcv_bar_quality,
)
from qt_pipeline.defs.ingestion.partitions import RAW_OHLCV_PARTITIONS, partition_window
from qt_pipeline.defs.ingestion.resources import MarketSourceResource
from qt_pipeline.defs.ranges import (
    SINGLE_RUN,
    asset_selected,
    check_selected,
    selected_partitions,
    with_target,
)
from qt_pipeline.defs.resources import DUCKDB_WRITER_POOL, LocalStoreResource
from qt_pipeline.market.contract import RejectReason
from qt_pipeline.redaction import redact

PREVIEW_ROWS = 5
REJECT_MESSAGES = 10
# Problems that concern a whole file rather than single rows.
FILE_LEVEL_REASONS = frozenset(
    {RejectReason.MALFORMED_FILE, RejectReason.EMPTY_FILE, RejectReason.MISSING_COLUMN}
)


def _cell(v: object) -> str:
    """A preview cell: ISO timestamps, floats with at most 6 decimals (not 14 digits of noise)."""
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    if isinstance(v, float):
        return f"{v:.6f}".rstrip("0").rstrip(".") if v == v else "NaN"
    return f"{v}"


def markdown_preview(bars: pd.DataFrame, rows: int = PREVIEW_ROWS) -> str:
    """The first ``rows`` bars as a Markdown table (timestamps in ISO-8601 UTC)."""
    if bars.empty:
        return "_no rows accepted_"
    head = bars.head(rows)
    cols = list(head.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for rec in head.itertuples(index=False):
        cells = [_cell(v) for v in rec]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ingestion_metadata(result, location: str) -> dict[str, Any]:
    """Materialisation metadata for one validated and stored partition."""
    accepted, rejected = result.accepted, result.rejected
    summary = result.summary()
    first = accepted["timestamp"].min() if len(accepted) else None
    last = accepted["timestamp"].max() if len(accepted) else None
    return {
        "rows_accepted": dg.MetadataValue.int(len(accepted)),
        "rows_rejected": dg.MetadataValue.int(int(summary["rejected_rows"])),
        "reject_records": dg.MetadataValue.int(len(rejected)),
        "rejects_by_reason": dg.MetadataValue.json(summary["by_reason"]),
        "first_timestamp": dg.MetadataValue.text(first.isoformat() if first is not None else "none"),
        "last_timestamp": dg.MetadataValue.text(last.isoformat() if last is not None else "none"),
        "storage_location": dg.MetadataValue.text(redact(location)),
        "preview": dg.MetadataValue.md(markdown_preview(accepted)),
        "reject_messages": dg.MetadataValue.md(
            "\n".join(f"- {redact(m)}" for m in result.grouped_messages(REJECT_MESSAGES)) or "_no rejects_"
        ),
        "dagster/row_count": dg.MetadataValue.int(len(accepted)),
    }


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            RAW_OHLCV_KEY,
            group_name="ingestion",
            kinds={"duckdb"},
            description="Validated OHLCV bars of one UTC day and symbol in the local DuckDB file (rejects kept).",
        )
    ],
    check_specs=[RAW_OHLCV_BAR_QUALITY],
    partitions_def=RAW_OHLCV_PARTITIONS,
    backfill_policy=SINGLE_RUN,
    can_subset=True,  # the bar quality check can run alone on stored partitions
    pool=DUCKDB_WRITER_POOL,
    name="raw_ohlcv",
)
def raw_ohlcv(
    context: dg.AssetExecutionContext, market_source: MarketSourceResource, local_store: LocalStoreResource
):
    """Every partition of the step's range: fetch, validate, store; then the bar quality check of each
    partition (inside this step: the same DuckDB connection, the same pool slot)."""
    settings = get_settings()
    keys = selected_partitions(context)
    store = local_store.get_store()
    if asset_selected(context, RAW_OHLCV_KEY):
        source = market_source.get_source()
        accepted = rejected = 0
        for key in keys:
            md = _ingest_partition(context, key, source, store, settings)
            accepted += md["rows_accepted"].value
            rejected += md["rows_rejected"].value
            context.add_asset_metadata(md, asset_key=RAW_OHLCV_KEY, partition_key=key)
        yield dg.MaterializeResult(
            asset_key=RAW_OHLCV_KEY,
            metadata={
                "partitions_in_run": dg.MetadataValue.int(len(keys)),
                "rows_accepted_in_run": dg.MetadataValue.int(accepted),
                "rows_rejected_in_run": dg.MetadataValue.int(rejected),
            },
        )
    if check_selected(context, raw_ohlcv_bar_quality):
        for key in keys:
            yield with_target(context, bar_quality(context, key, store))


def _ingest_partition(context: Any, key: str, source: Any, store: Any, settings: Any) -> dict[str, Any]:
    from qt_pipeline.market.sources import ingest_batches

    symbol, start, end = partition_window(key)
    context.log.info(f"fetching {symbol} [{start.isoformat()}, {end.isoformat()}) from {source.describe()}")
    result = ingest_batches(
        source, symbol, start, end, interval=settings.interval, known_symbols=settings.symbols
    )
    if len(result.accepted):
        store.write_bars(result.accepted)
    if len(result.rejected):
        store.write_rejects(result.rejected)
    summary = result.summary()
    for note in result.warnings:  # once per file: ignored columns, derived vwap/trade_count
        context.log.warning(redact(note))
    if summary["reject_records"]:
        context.log.warning(
            f"{symbol} {start.date()}: {summary['rejected_rows']} row(s) rejected "
            f"{json.dumps(summary['by_reason'])}; first: "
            + "; ".join(result.grouped_messages(3, per_group=1))
        )
    if not len(result.accepted) and len(result.rejected):
        reasons = set(result.rejected["reason"].dropna())
        if reasons & {str(r) for r in FILE_LEVEL_REASONS}:
            context.log.warning(
                f"{symbol} {start.date()}: every row was rejected because of a file-level problem "
                f"({sorted(reasons)}); the rejects are stored in {redact(store.location)} — fix the "
                "file and drop it into the landing directory again"
            )
    return ingestion_metadata(result, store.location)
