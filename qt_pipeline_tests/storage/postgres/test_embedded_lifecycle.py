"""The embedded PostgreSQL after a crash and after a reset (issue 10): a process that was using it keeps
working after kill -9 of the postmaster — whether another `qt` process or its own next connection
restarts it (same port) — and servers whose data directory was deleted are found and stopped by the next
start and by `qt db stop`. Real servers, real SIGKILL, real subprocesses."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from qt_pipeline.market.contract import KEY
from qt_pipeline.storage.checksum import frame_checksum
from qt_pipeline.storage.postgres.embedded import (
    ensure_embedded_postgres,
    find_orphans,
    stop_embedded_postgres,
)
from qt_pipeline.storage.postgres.store import PostgresStore
from qt_pipeline_tests.storage.backends import make_bars

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the TMPDIR cluster layout exists only as root")


def _postmaster(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def _kill9(pgdata: Path) -> None:
    import psutil

    pid = _postmaster(pgdata)
    kids = psutil.Process(pid).children(recursive=True)
    os.kill(pid, signal.SIGKILL)
    for k in kids:
        with contextlib.suppress(psutil.NoSuchProcess):
            k.kill()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (psutil.pid_exists(pid) or any(k.is_running() for k in kids)):
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # an exited process nobody reaped yet (a zombie) is not running
        if "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text():
            return False
    return True


def _wait_gone(pid: int, seconds: float = 20) -> bool:
    """True once ``pid`` has exited (a stopped postmaster takes a moment after pg_ctl returns)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    return not _alive(pid)


def test_a_running_process_survives_a_crash_restarted_by_another_qt_process(settings):
    url = ensure_embedded_postgres(settings)
    pgdata = (settings.data_dir / "postgres").resolve()
    port = make_url(url).port
    store = PostgresStore(url, settings)
    try:
        first = make_bars(["AAA"], "2024-01-01", 500, seed=1)
        store.write_bars(first)
        with store.engine.connect() as c:  # make the commit durable before the crash (fsync is on)
            c.exec_driver_sql("CHECKPOINT")
        _kill9(pgdata)
        # another qt process restarts it (what any `qt` command does first)
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                "from qt_pipeline.config import get_settings;"
                "from qt_pipeline.storage.postgres.embedded import ensure_embedded_postgres;"
                "print(ensure_embedded_postgres(get_settings()).rsplit(':', 1)[1].split('/')[0])",
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "QT_DATA_DIR": str(settings.data_dir)},
            timeout=180,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert int(out.stdout.strip().splitlines()[-1]) == port  # same port: found where it was
        second = make_bars(["AAA"], "2024-01-02", 500, seed=2)
        store.write_bars(second)  # the pooled connections died with the server; new ones reach it
        got = store.read_bars("AAA")
        expected = pd.concat([first, second], ignore_index=True).sort_values(list(KEY)).reset_index(drop=True)
        assert len(got) == 1_000 and frame_checksum(got) == frame_checksum(expected)
    finally:
        store.close()
        stop_embedded_postgres(settings, remove_data=True)


def test_the_next_connection_restarts_a_crashed_server_but_not_a_stopped_one(settings):
    url = ensure_embedded_postgres(settings)
    pgdata = (settings.data_dir / "postgres").resolve()
    # this directory's small retry backoff (conftest make_settings): the refused reads after the deliberate
    # stop are retried as often, without waiting out the default 4.4 s between attempts
    store = PostgresStore(
        url, settings.model_copy(update={"pg_retry_initial_s": 0.05, "pg_retry_max_s": 0.3})
    )
    try:
        store.write_bars(make_bars(["AAA"], "2024-01-01", 50, seed=1))
        with store.engine.connect() as c:
            c.exec_driver_sql("CHECKPOINT")
        old = _postmaster(pgdata)
        _kill9(pgdata)
        assert len(store.read_bars("AAA")) == 50  # no other process: this one restarts it
        assert _postmaster(pgdata) != old
        stop_embedded_postgres(settings)  # a deliberate stop is respected
        from qt_pipeline.storage.interface import StorageError

        with pytest.raises(StorageError):
            store.read_bars("AAA")
        assert not (pgdata / "postmaster.pid").exists()
    finally:
        store.close()
        stop_embedded_postgres(settings, remove_data=True)


def test_a_server_whose_data_dir_was_deleted_is_stopped_by_qt_db_stop(settings, tmp_path, monkeypatch):
    from qt_pipeline.cli import app

    url = ensure_embedded_postgres(settings)
    real = (settings.data_dir / "postgres").resolve()
    pid = _postmaster(real)
    shutil.rmtree(settings.data_dir)  # the README's reset, while the server runs
    assert real in find_orphans()
    other = settings.data_dir.parent / "other-data"
    monkeypatch.setenv("QT_DATA_DIR", str(other))
    from qt_pipeline.config import get_settings

    get_settings.cache_clear()
    out = CliRunner().invoke(app, ["db", "stop"])
    assert out.exit_code == 0, out.output
    assert "orphan" in out.output and str(real) in out.output
    assert _wait_gone(pid) and not real.exists()
    assert url  # the URL of the removed cluster is no longer served


def test_the_next_start_stops_an_orphan_of_another_data_dir(settings, tmp_path):
    url = ensure_embedded_postgres(settings)
    real = (settings.data_dir / "postgres").resolve()
    pid = _postmaster(real)
    shutil.rmtree(settings.data_dir)
    other = settings.model_copy(update={"data_dir": tmp_path / "second"})
    try:
        ensure_embedded_postgres(other)  # any start cleans up first
        assert _wait_gone(pid) and not real.exists()
    finally:
        stop_embedded_postgres(other, remove_data=True)
    assert url
