"""A server whose owner was killed does not outlive it (issue 10): a real subprocess that owns its servers
(QTP_EMBEDDED_OWNER_PID, as a test session does) starts a real embedded PostgreSQL and is killed with
SIGKILL — no teardown runs, its data directory stays. The server keeps running; `qt db stop` (like the
next start and the next test session's reaper, all :func:`stop_orphans`) finds it and stops it, while a
server whose owner is alive is left alone."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from qt_pipeline.storage.postgres.embedded import (
    OWNER_PID_ENV,
    OWNER_PID_FILE,
    find_abandoned,
    stop_orphans,
)
from qt_pipeline_tests.storage.postgres.test_embedded_lifecycle import _alive, _postmaster, _wait_gone

OWNER = r"""
import os, sys, time
os.environ["QTP_EMBEDDED_OWNER_PID"] = str(os.getpid())
from qt_pipeline.config import get_settings
from qt_pipeline.storage.postgres.embedded import ensure_embedded_postgres
ensure_embedded_postgres(get_settings())
print("ready", flush=True)
time.sleep(600)
"""


def _start_owner(data_dir: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != OWNER_PID_ENV}
    env["QT_DATA_DIR"] = str(data_dir)
    proc = subprocess.Popen(
        [sys.executable, "-c", OWNER], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else ""
    if line.strip() != "ready":
        proc.kill()
        raise AssertionError(f"the owner process did not start its server: {proc.stderr.read()[-2000:]}")
    return proc


def test_a_server_whose_owner_was_killed_is_stopped_by_qt_db_stop(settings, tmp_path, monkeypatch):
    from qt_pipeline.cli import app
    from qt_pipeline.config import get_settings

    data = tmp_path / "owned"
    proc = _start_owner(data)
    pgdata = (data / "postgres").resolve()
    try:
        pm = _postmaster(pgdata)
        assert (pgdata / OWNER_PID_FILE).read_text().split()[0] == str(proc.pid)
        # while its owner lives, nothing touches it
        assert pgdata not in find_abandoned()
        assert pgdata not in stop_orphans() and _alive(pm)

        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        time.sleep(0.5)
        assert _alive(pm) and data.exists()  # the server outlived its killed owner (the gap)
        assert pgdata in find_abandoned()

        monkeypatch.setenv("QT_DATA_DIR", str(tmp_path / "another"))
        get_settings.cache_clear()
        out = CliRunner().invoke(app, ["db", "stop"])
        assert out.exit_code == 0, out.output
        assert "orphan" in out.output and str(pgdata) in out.output
        assert _wait_gone(pm) and not pgdata.exists()
        assert pgdata not in find_abandoned()
    finally:
        if proc.poll() is None:
            proc.kill()
        stop_orphans(under=data)


def test_this_session_owns_the_servers_its_tests_start():
    # set by the session fixture in qt_pipeline_tests/conftest.py and inherited by spawned `qt` processes
    assert os.environ.get(OWNER_PID_ENV) == str(os.getpid())
