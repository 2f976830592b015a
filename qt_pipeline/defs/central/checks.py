"""Blocking consistency check of ``central_ohlcv``: per partition, Postgres holds exactly what DuckDB holds.

The check spec is declared on the ``central_ohlcv`` asset (defs/central/assets.py) and evaluated per
partition inside the asset's step, so a ranged backfill proves every partition it copied.
"""

from datetime import timedelta
from typing import Any

import dagster as dg

from qt_pipeline.defs.central.assets import CENTRAL_OHLCV_KEY, partition_symbol_day
from qt_pipeline.redaction import redact


def consistency_evaluation(context: Any, key: str, local: Any, central: Any) -> dg.AssetCheckEvaluation:
    """Compare one symbol-day of ``local`` (DuckDB) and ``central`` (Postgres) → a check evaluation."""
    from qt_pipeline.storage.consistency import check_partition

    symbol, day = partition_symbol_day(key)
    result = check_partition(local, central, symbol, day)
    md = result.metadata()
    md["location"] = redact(central.location)
    if not result.ok:
        md["fix"] = (
            "re-copy this symbol-day: `qt reconcile --symbols "
            f"{symbol} --start {day.isoformat()} --end {(day + timedelta(days=1)).isoformat()}`, the reconcile_job, "
            "or materialise central_ohlcv for this partition with config force=true"
        )
        context.log.error(
            f"{symbol} {day}: Postgres differs from DuckDB — " + "; ".join(md.get("differing_keys", []))
        )
    metadata = {k: dg.MetadataValue.json(v) if isinstance(v, list) else v for k, v in md.items()}
    return dg.AssetCheckEvaluation(
        asset_key=CENTRAL_OHLCV_KEY,
        check_name="central_ohlcv_consistency",
        partition=str(key),
        passed=result.ok,
        blocking=True,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
    )
