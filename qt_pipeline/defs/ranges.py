"""Plumbing shared by the partitioned assets that run a whole partition range in one step.

The (date, symbol) assets declare ``BackfillPolicy.single_run()``: a backfill of N partitions (UI,
schedule, ``qt run``) is one run whose step receives the key range, instead of N runs that each pay
seconds of orchestration. Inside the step every partition gets its own metadata
(``add_asset_metadata(partition_key=…)``) and its own check evaluation, linked to the materialisation it
checks, so the UI shows per-partition truth whatever the run size.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

SINGLE_RUN = dg.BackfillPolicy.single_run()


def selected_partitions(context: dg.AssetExecutionContext) -> list[str]:
    """Partition keys of this step (one for a single-partition run, the whole range for a backfill)."""
    return [str(k) for k in context.partition_keys]


def with_target(
    context: dg.AssetExecutionContext, evaluation: dg.AssetCheckEvaluation
) -> dg.AssetCheckEvaluation:
    """``evaluation`` linked to the latest materialisation of its partition (yield the asset's result
    first): the UI and ``all_deps_blocking_checks_passed`` then know the check is about that data."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=evaluation.asset_key, asset_partitions=[str(evaluation.partition)]),
        limit=1,
    ).records
    if not records:
        return evaluation
    rec = records[0]
    target = AssetCheckEvaluationTargetMaterializationData(
        storage_id=rec.storage_id, run_id=rec.run_id, timestamp=rec.timestamp
    )
    return dg.AssetCheckEvaluation(
        asset_key=evaluation.asset_key,
        check_name=evaluation.check_name,
        passed=evaluation.passed,
        metadata=evaluation.metadata,
        target_materialization_data=target,
        severity=evaluation.severity,
        description=evaluation.description,
        blocking=evaluation.blocking,
        partition=evaluation.partition,
    )


def compact_keys(keys: list[str], limit: int = 10) -> str:
    """``a, b, c … (+N more)`` for messages."""
    shown = ", ".join(keys[:limit])
    return shown + (f" … (+{len(keys) - limit} more)" if len(keys) > limit else "")


def asset_selected(context: Any, key: dg.AssetKey) -> bool:
    return key in context.selected_asset_keys


def check_selected(context: Any, key: dg.AssetCheckKey) -> bool:
    return key in context.selected_asset_check_keys
