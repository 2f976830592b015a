"""A real PgBouncer for tests (transaction pooling, trust auth) from the repository's harness
(``qt_pipeline_tests/pgbouncer_harness/start``: the pinned Debian package, fetched with ``apt-get download``
and unpacked with ``dpkg-deb -x`` on first use, no root needed).

Usage::

    with PgBouncer(run_dir, upstream_port=5432) as pgb:   # listening on 127.0.0.1:pgb.port
        url = pgb.url_for("postgresql://postgres@127.0.0.1:5432/mydb")   # same URL, through PgBouncer
        pgb.admin("SHOW POOLS")                                           # its admin console

The process is stopped when the block ends; started with ``--exit-on-stdin-eof`` it also exits by itself
when the test process dies (its stdin is a pipe from here).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import psycopg2
import pytest
from sqlalchemy.engine import make_url

from qt_pipeline_tests.faults import free_port, stop_process

HARNESS = Path(__file__).resolve().parent / "pgbouncer_harness" / "start"

__all__ = ["HARNESS", "PgBouncer"]


class PgBouncer:
    def __init__(
        self,
        run_dir: Path,
        *,
        upstream_host: str = "127.0.0.1",
        upstream_port: int = 5432,
        user: str = "postgres",
    ):
        self.run_dir = Path(run_dir)
        self.upstream = (upstream_host, int(upstream_port))
        self.user = user
        self.port = free_port()
        self.log_path = self.run_dir / "pgbouncer.log"
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 300) -> PgBouncer:
        """Start it (installing the package on first use); fails the test with the harness's one-line
        error when it cannot."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            str(HARNESS),
            "--port",
            str(self.port),
            "--dir",
            str(self.run_dir / "conf"),
            "--exit-on-stdin-eof",
        ]
        cmd += [
            "--upstream-host",
            self.upstream[0],
            "--upstream-port",
            str(self.upstream[1]),
            "--user",
            self.user,
        ]
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                text = self.log_path.read_text(errors="replace")
                # the harness's own lines: the last is the error (an earlier one may announce the download)
                said = [ln for ln in text.splitlines() if ln.startswith("pgbouncer test server:")]
                pytest.fail(
                    said[-1]
                    if said
                    else f"PgBouncer exited with status {self._proc.returncode}: {text[-2000:]}",
                    pytrace=False,
                )
            with socket.socket() as s:
                s.settimeout(1)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(
                    f"PgBouncer not listening on 127.0.0.1:{self.port} after {timeout:.0f} s; log: {self.log_path}",
                    pytrace=False,
                )
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)

    def url_for(self, url: str) -> str:
        """``url`` with its host and port replaced by PgBouncer's."""
        return make_url(url).set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def admin(self, command: str) -> list[dict[str, object]]:
        """Rows of an admin-console command (``SHOW POOLS``, ``SHOW SERVERS``...) as dicts."""
        conn = psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, dbname="pgbouncer", connect_timeout=5
        )
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(command)
                if cur.description is None:  # a command (RECONNECT, PAUSE...): no rows
                    return []
                names = [d[0] for d in cur.description]
                return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()

    def wait_until_serving(self, url: str, timeout: float = 60) -> None:
        """Wait until a query through PgBouncer to ``url``'s database succeeds: after its server logins
        failed (an outage upstream) it refuses clients for ``server_login_retry`` (1 s in the harness)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = psycopg2.connect(self.url_for(url), connect_timeout=5)
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                        return
                finally:
                    conn.close()
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
