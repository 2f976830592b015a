"""Hybrid-domain jobs: cache warming (asset job) and outbox replay (op job, needs no DuckDB file)."""

from typing import Any

import dagster as dg

from qt_pipeline.config import get_settings

local_cache_warm_job = dg.define_asset_job("local_cache_warm_job", selection=["local_cache_warm"])


@dg.op(description="Replay the hybrid store's durable outbox into the central store, in order.")
def replay_outbox_op(context: dg.OpExecutionContext) -> dg.Output[int]:
    from qt_pipeline.storage.hybrid import replay_outbox

    result = replay_outbox(get_settings())
    metadata: dict[str, Any] = {
        "replayed_batches": result.replayed_batches,
        "replayed_rows": result.replayed_rows,
        "remaining_batches": result.remaining_batches,
        "seconds": round(result.seconds, 3),
    }
    if result.skipped_reason:
        context.log.warning(f"outbox replay skipped: {result.skipped_reason}")
        metadata["skipped_reason"] = result.skipped_reason
    if result.error:
        raise dg.Failure(
            description=f"outbox replay stopped (batches kept, safe to retry): {result.error}",
            metadata=metadata,
        )
    context.log.info(
        f"outbox replay: {result.replayed_batches} batch(es), {result.replayed_rows} row(s) in "
        f"{result.seconds:.2f} s; {result.remaining_batches} left"
    )
    return dg.Output(result.replayed_rows, metadata=metadata)


@dg.job(
    description="Drain the hybrid store's outbox into the central store (requested by central_health_sensor)."
)
def outbox_replay_job() -> None:
    replay_outbox_op()
