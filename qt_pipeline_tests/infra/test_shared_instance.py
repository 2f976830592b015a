"""The production instance config (infra/dagster.prod.yaml) on the machine's real PostgreSQL, shared by
two processes that run a job at the same time: run/event-log/schedule storage live in PostgreSQL, the
instance carries the queue and run-retry settings, and the DuckDB-writer pool (set up front, as the
deployment's dagster-init step does) lets one op at a time hold it across processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg2
import pytest

from qt_pipeline.defs.resources import DUCKDB_WRITER_POOL
from qt_pipeline_tests.conftest import PG_ADMIN_URL

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


@pytest.fixture
def dagster_db():
    """A database of its own on the machine's PostgreSQL for the Dagster instance (dropped after)."""
    from sqlalchemy.engine import make_url

    name = f"qt_dagster_{uuid.uuid4().hex[:10]}"
    conn = psycopg2.connect(PG_ADMIN_URL, connect_timeout=5)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN_URL)
    yield url.set(database=name)
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


def _env(home: Path, db_url, log: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "QT_"))}
    env.update(
        DAGSTER_HOME=str(home),
        DAGSTER_PG_HOST=db_url.host or "127.0.0.1",
        DAGSTER_PG_PORT=str(db_url.port or 5432),
        DAGSTER_PG_USER=db_url.username or "postgres",
        DAGSTER_PG_PASSWORD=db_url.password or "",
        DAGSTER_PG_DB=db_url.database,
        PGSSLMODE="disable",
        QT_SHARED_INSTANCE_LOG=str(log),
        PYTHONPATH=str(REPO),
    )
    return env


def _failure_report(instance, statuses: dict[str, str]) -> str:
    lines = [str(statuses)]
    for rid, status in statuses.items():
        if status != "SUCCESS":
            for ev in instance.all_logs(rid):
                if ev.is_dagster_event and "FAIL" in ev.dagster_event.event_type_value:
                    lines.append(f"{rid}: {ev.dagster_event.event_type_value}: {ev.message}"[:1500])
    return "\n".join(lines)


@pytest.fixture
def instance_env(tmp_path: Path, dagster_db):
    """DAGSTER_HOME with infra/dagster.prod.yaml on the test database; the env for child processes."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "infra" / "dagster.prod.yaml", home / "dagster.yaml")
    env = _env(home, dagster_db, tmp_path / "slots.jsonl")
    saved = {k: os.environ.get(k) for k in env if k.startswith(("DAGSTER_", "PGSSLMODE"))}
    os.environ.update({k: env[k] for k in saved})
    try:
        yield env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _dagster(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "dagster"), *args],
        env=env,
        cwd=env["DAGSTER_HOME"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


MODULE = ["-m", "qt_pipeline_tests.infra.shared_instance_defs"]


@pytest.mark.timeout(1200)
def test_prod_instance_on_postgres_runs_a_job_from_two_processes(instance_env, dagster_db) -> None:
    from dagster import DagsterInstance, RunsFilter

    from qt_pipeline_tests.infra import shared_instance_defs

    assert shared_instance_defs.DUCKDB_WRITER_POOL == DUCKDB_WRITER_POOL

    instance = DagsterInstance.get()
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
    assert instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2

    # the deployment's init step (the dagster-init service of infra/compose.yaml): pool limits are set
    # before any run, so concurrent first uses do not race to create the pool's default row
    init = _dagster(instance_env, "instance", "concurrency", "set", DUCKDB_WRITER_POOL, "1")
    out, _ = init.communicate(timeout=300)
    assert init.returncode == 0, out[-3000:]
    assert instance.event_log_storage.get_concurrency_info(DUCKDB_WRITER_POOL).slot_count == 1

    # two processes run the same job at the same time through the one instance
    procs = [_dagster(instance_env, "job", "execute", *MODULE, "-j", "writer_pool_job") for _ in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=540)
        assert p.returncode == 0, out[-3000:]
    runs = instance.get_runs(RunsFilter(job_name="writer_pool_job"))
    statuses = {r.run_id: r.status.value for r in runs}
    assert sorted(statuses.values()) == ["SUCCESS", "SUCCESS"], _failure_report(instance, statuses)

    # the DuckDB-writer pool (one slot) let one op at a time hold it, across processes
    log = Path(instance_env["QT_SHARED_INSTANCE_LOG"])
    records = sorted((json.loads(line) for line in log.read_text().splitlines()), key=lambda r: r["start"])
    assert len(records) == 2 and records[0]["pid"] != records[1]["pid"]
    assert records[0]["end"] <= records[1]["start"], records

    # everything is in PostgreSQL, where any other machine of the deployment reads it
    conn = psycopg2.connect(dagster_db.render_as_string(hide_password=False))
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM runs WHERE pipeline_name = 'writer_pool_job'")
        assert cur.fetchone()[0] == 2
        # (Dagster stores a run's success under its legacy name PIPELINE_SUCCESS)
        cur.execute(
            "SELECT count(DISTINCT run_id) FROM event_logs"
            " WHERE dagster_event_type IN ('RUN_SUCCESS', 'PIPELINE_SUCCESS')"
        )
        assert cur.fetchone()[0] == 2
    conn.close()
