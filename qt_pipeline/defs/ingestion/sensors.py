"""``landing_directory_sensor`` and ``landing_quarantine_job``.

The sensor watches the landing directory. Cursor: JSON ``{path: fingerprint}`` of files already handled.
For each new or changed file it inspects the file and requests

* one ``ingestion_job`` run per valid ``(date, symbol)`` partition the file touches
  (``run_key = "<path>:<fingerprint>:<partition>"``, so each is requested exactly once; tag
  ``qt/landing_file``; run config points ``market_source`` at the landing directory), and
* one ``landing_quarantine_job`` run when the file has problems or rows no valid partition covers (unknown
  symbol, before ``QT_PARTITIONS_START``, future, malformed or empty file): that job validates the whole
  file and stores its rejects, so nothing is silently dropped.

Rows of the still-open UTC day have no partition yet (partitions are closed days): such a file is not
added to the cursor, so it is inspected again on later ticks and its last partition is requested once the
day has closed (run keys keep the other requests from repeating). The cursor keeps only files still present.

A landing run that *failed* (e.g. the DuckDB file was locked by an overlapping run) is requested again on a
later tick (:func:`retry_failed_landing_runs`, up to ``MAX_ATTEMPTS``), and the quarantine op retries
itself: a file whose cursor entry moved on still ends accepted, rejected or quarantined.
"""

import json
from datetime import date, timedelta

import dagster as dg
import pandas as pd

from qt_pipeline.config import get_settings
from qt_pipeline.defs.ingestion.partitions import newest_closed_day, partition_key_for
from qt_pipeline.defs.ingestion.resources import MarketSourceResource
from qt_pipeline.defs.ingestion.schedules import ingestion_job
from qt_pipeline.defs.resources import DUCKDB_WRITER_POOL, LocalStoreResource
from qt_pipeline.redaction import redact

LANDING_FILE_TAG = "qt/landing_file"
FINGERPRINT_TAG = "qt/landing_fingerprint"
ATTEMPT_TAG = "qt/landing_attempt"
RETRY_OF_TAG = "qt/landing_retry_of"
MAX_ATTEMPTS = 3  # a landing run that failed (e.g. the DuckDB file was locked by an overlapping run)
QUARANTINE_MESSAGES = 20


class QuarantineConfig(dg.Config):
    path: str  # the landing file to validate as a whole


@dg.op(
    pool=DUCKDB_WRITER_POOL,
    description="Validate one landing file as a whole and store all its rejects (nothing is dropped).",
    # another process may hold the DuckDB file for a moment (an overlapping run, `qt run`): retry
    retry_policy=dg.RetryPolicy(max_retries=2, delay=1, backoff=dg.Backoff.EXPONENTIAL),
)
def quarantine_landing_file(
    context: dg.OpExecutionContext,
    config: QuarantineConfig,
    market_source: MarketSourceResource,
    local_store: LocalStoreResource,
) -> dg.Output[int]:
    from qt_pipeline.market.quarantine import quarantine_file

    settings = get_settings()
    result, rejects = quarantine_file(
        market_source.landing_source(),
        config.path,
        interval=settings.interval,
        known_symbols=settings.symbols,
        partitions_start=settings.partitions_start,
    )
    store = local_store.get_store()
    stored = store.write_rejects(rejects) if len(rejects) else 0
    messages = [
        f"{r.source}{'' if pd.isna(r.line) else f':{int(r.line)}'}: {r.reason}: {r.detail}"
        for r in rejects.head(QUARANTINE_MESSAGES).itertuples(index=False)
    ]
    for m in messages:
        context.log.warning(redact(m))
    by_reason = {str(k): int(v) for k, v in rejects["reason"].value_counts().sort_index().items()}
    context.log.info(f"{config.path}: {stored} reject record(s) stored in {redact(store.location)}")
    return dg.Output(
        stored,
        metadata={
            "file": dg.MetadataValue.path(config.path),
            "reject_records": dg.MetadataValue.int(stored),
            "rejects_by_reason": dg.MetadataValue.json(by_reason),
            "rows_valid_in_file": dg.MetadataValue.int(result.accepted),
            "messages": dg.MetadataValue.md("\n".join(f"- {redact(m)}" for m in messages) or "_none_"),
            "storage_location": dg.MetadataValue.text(redact(store.location)),
        },
    )


@dg.job(
    description="Store the rejects of a landing file that (partly) belongs to no raw_ohlcv partition.",
    tags={"qt/domain": "ingestion"},
)
def landing_quarantine_job() -> None:
    quarantine_landing_file()


def plan_landing_file(inspection, *, today: date | None = None) -> tuple[list[tuple[str, date]], bool, bool]:
    """``(valid partitions, needs quarantine, pending)`` of an inspected landing file.

    ``pending`` is True when the file holds rows of the open day (today UTC): they get a partition once
    the day closes."""
    settings = get_settings()
    newest = newest_closed_day()
    today = today or newest + timedelta(days=1)
    valid: list[tuple[str, date]] = []
    quarantine = inspection.home is None or len(inspection.problems) > 0
    pending = False
    for symbol, day in inspection.partition_keys:
        if symbol in settings.symbols and settings.partitions_start <= day <= newest:
            valid.append((symbol, day))
        elif symbol in settings.symbols and day == today:
            pending = True
        else:
            quarantine = True
    return valid, quarantine, pending


def retry_failed_landing_runs(instance, present: dict[str, str]) -> list[dg.RunRequest]:
    """Run requests repeating the failed landing runs (partition or quarantine) of files still present
    with the same content, up to :data:`MAX_ATTEMPTS` in all; each failed run is repeated once (run key
    ``retry:<run id>``). So a file whose run failed because runs overlapped (the DuckDB lock) still ends
    accepted, rejected or quarantined although the cursor has moved on."""
    out = []
    for job_name in (ingestion_job.name, landing_quarantine_job.name):
        records = instance.get_run_records(
            filters=dg.RunsFilter(job_name=job_name, statuses=[dg.DagsterRunStatus.FAILURE]), limit=200
        )
        for rec in records:
            run = rec.dagster_run
            path = run.tags.get(LANDING_FILE_TAG)
            if path not in present or run.tags.get(FINGERPRINT_TAG) != present[path][:16]:
                continue
            attempt = int(run.tags.get(ATTEMPT_TAG, "1"))
            if attempt >= MAX_ATTEMPTS:
                continue
            if instance.get_run_records(filters=dg.RunsFilter(tags={RETRY_OF_TAG: run.run_id}), limit=1):
                continue
            tags = {
                LANDING_FILE_TAG: path,
                FINGERPRINT_TAG: present[path][:16],
                ATTEMPT_TAG: str(attempt + 1),
                RETRY_OF_TAG: run.run_id,
            }
            out.append(
                dg.RunRequest(
                    run_key=f"retry:{run.run_id}",
                    job_name=job_name,
                    partition_key=run.tags.get("dagster/partition"),
                    run_config=run.run_config,
                    tags=tags,
                )
            )
    return out


@dg.sensor(
    name="landing_directory_sensor",
    jobs=[ingestion_job, landing_quarantine_job],
    minimum_interval_seconds=get_settings().landing_sensor_interval_s,
    description="New or changed files in the landing directory → raw_ohlcv runs per partition touched "
    "(+ a quarantine run for rows no partition covers).",
)
def landing_directory_sensor(context: dg.SensorEvaluationContext, market_source: MarketSourceResource):
    try:
        processed: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
        if not isinstance(processed, dict):
            raise ValueError("not a JSON object")
    except (ValueError, TypeError):
        context.log.warning(f"landing sensor cursor {context.cursor!r} is unreadable; starting afresh")
        processed = {}
    source = market_source.landing_source()
    run_config = market_source.landing_run_config()
    files = source.scan()
    present = {str(f.path): f.fingerprint for f in files}
    new_cursor = {p: fp for p, fp in processed.items() if p in present}
    requested = 0
    for f in files:
        path = str(f.path)
        if processed.get(path) == f.fingerprint:
            continue
        inspection = source.inspect(f.path)
        valid, quarantine, pending = plan_landing_file(inspection)
        tags = {LANDING_FILE_TAG: path, FINGERPRINT_TAG: f.fingerprint[:16]}
        for symbol, day in valid:
            key = partition_key_for(day, symbol)
            requested += 1
            yield dg.RunRequest(
                run_key=f"{path}:{f.fingerprint}:{key}",
                job_name=ingestion_job.name,
                partition_key=key,
                run_config=run_config,
                tags=tags,
            )
        if quarantine:
            requested += 1
            yield dg.RunRequest(
                run_key=f"{path}:{f.fingerprint}:quarantine",
                job_name=landing_quarantine_job.name,
                run_config={
                    **run_config,
                    "ops": {"quarantine_landing_file": {"config": {"path": path}}},
                },
                tags=tags,
            )
        if pending:
            context.log.info(f"{path}: holds bars of the open UTC day; it is checked again on later ticks")
            new_cursor.pop(path, None)
        else:
            new_cursor[path] = f.fingerprint
    for retry in retry_failed_landing_runs(context.instance, present):
        context.log.warning(
            f"{retry.tags[LANDING_FILE_TAG]}: run {retry.tags[RETRY_OF_TAG]} failed; requesting it again "
            f"(attempt {retry.tags[ATTEMPT_TAG]} of {MAX_ATTEMPTS})"
        )
        requested += 1
        yield retry
    if requested == 0 and new_cursor == processed:
        yield dg.SkipReason(f"no new or changed files in {source.directory}")
    context.update_cursor(json.dumps(new_cursor, sort_keys=True))
