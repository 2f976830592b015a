"""The embedded default PostgreSQL: used when ``NEON_DATABASE_URL`` is not set.

:func:`ensure_embedded_postgres` starts (or reuses, when it is already running) a local PostgreSQL whose
data directory is ``QT_DATA_DIR/postgres`` and returns its URL. It prefers the machine's
``initdb``/``pg_ctl`` (as root they run as the ``postgres`` OS user via ``runuser``; ``pg_ctl`` refuses
root) and falls back to the ``pgserver`` wheel (PostgreSQL 16) when no server binaries are installed.

* listens on 127.0.0.1 only, on a stable port: the first start picks a free one and keeps it in
  ``QT_DATA_DIR/postgres.port``; every restart (after a crash, by any ``qt`` command) uses it again while
  it is free, so processes that were using the server find it where it was. A connection to an embedded
  server whose postmaster crashed (``postmaster.pid`` left behind, process gone) restarts it (see
  :func:`rediscover_port`); a cleanly stopped one stays stopped;
* TCP authentication is scram-sha-256 with a generated password kept in ``QT_DATA_DIR/postgres.secret``
  (mode 0600) — so the URL is a secret like any other and is registered for redaction;
* the server keeps running after the Python process exits (later runs reuse it); stop it with
  :func:`stop_embedded_postgres`.
* when run as root, the cluster files live in ``$TMPDIR/qt-embedded-pg-<hash of QT_DATA_DIR>`` (owned by the
  ``postgres`` user) and ``QT_DATA_DIR/postgres`` is a symlink to it — private parent directories cannot
  lock the server out of its own files. Such a cluster records its ``QT_DATA_DIR`` (file ``qt_owner``);
  one whose ``QT_DATA_DIR`` was deleted is an *orphan*: every start of an embedded server and
  ``qt db stop`` stop and remove orphans (:func:`stop_orphans`), so no server outlives its data
  directory. (Without root the cluster lives inside ``QT_DATA_DIR``; PostgreSQL shuts itself down when its
  lock file disappears.)
* a process that starts servers it must not leave behind (the test session) sets
  ``QTP_EMBEDDED_OWNER_PID`` to its pid; every server started under it records that owner (pid and start
  time, file ``qt_owner_pid``) and is listed in ``$TMPDIR/qt-embedded-owned/``. Once the owner is gone
  (even killed with SIGKILL, its temp directories still there), the server is *abandoned*: the next start
  of an embedded server, ``qt db stop`` and the next test session stop and remove it
  (:func:`stop_orphans`). Servers started without the variable (a user's) outlive their process by design.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from qt_pipeline.config import Settings
from qt_pipeline.redaction import redact, register_secret
from qt_pipeline.storage.interface import StorageError

log = logging.getLogger("qt_pipeline.storage.postgres")

SUPERUSER = "postgres"
DATABASE = "postgres"


class EmbeddedPostgresError(StorageError):
    """The embedded PostgreSQL could not be started (message says why and what to do)."""


def _pg_bin_dir() -> Path | None:
    env = os.environ.get("QT_PG_BIN_DIR")
    if env and (Path(env) / "pg_ctl").exists():
        return Path(env)
    found = shutil.which("pg_ctl")
    if found and (Path(found).parent / "initdb").exists():
        return Path(found).parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OWNER_FILE = "qt_owner"
CLUSTER_PREFIX = "qt-embedded-pg-"
OWNER_PID_ENV = "QTP_EMBEDDED_OWNER_PID"  # not QT_*: the test settings fixture clears those
OWNER_PID_FILE = "qt_owner_pid"
OWNED_REGISTRY = "qt-embedded-owned"


def _port_file(settings: Settings) -> Path:
    return settings.data_dir.expanduser().resolve() / "postgres.port"


def _stored_port(settings: Settings) -> int | None:
    try:
        return int(_port_file(settings).read_text().strip())
    except (OSError, ValueError):
        return None


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # like PostgreSQL's own listener: connections of a killed server in TIME_WAIT do not block it
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _record_owner(pgdata: Path, base: Path) -> None:
    """Write which ``QT_DATA_DIR`` a cluster kept in ``$TMPDIR`` belongs to (for orphan detection)."""
    if pgdata.parent == base:
        return  # the cluster lives inside its data directory: it goes with it
    with contextlib.suppress(OSError):
        (pgdata / OWNER_FILE).write_text(str(base) + "\n")


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (``/proc/<pid>/stat`` field 22; tells a reused pid apart), ""
    where ``/proc`` is not available but the process exists, None when there is no such process."""
    try:
        stat_text = Path(f"/proc/{pid}/stat").read_text()
        return stat_text.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        if Path("/proc/self/stat").exists():
            return None
    return "" if _pid_exists(pid) else None


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    return True


def _record_owner_process(pgdata: Path) -> None:
    """With ``QTP_EMBEDDED_OWNER_PID`` set: record that process as the server's owner (see the module
    docstring) and list the cluster in the registry the reaper scans."""
    raw = os.environ.get(OWNER_PID_ENV, "").strip()
    if not raw.isdigit():
        return
    start = _process_start(int(raw)) or ""
    registry = Path(tempfile.gettempdir()) / OWNED_REGISTRY
    with contextlib.suppress(OSError):
        (pgdata / OWNER_PID_FILE).write_text(f"{raw} {start}\n")
        registry.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            registry.chmod(0o1777)  # shared by every user's test sessions (sticky, like /tmp)
        key = hashlib.sha1(str(pgdata).encode()).hexdigest()[:16]
        (registry / key).write_text(f"{pgdata}\n")


def find_abandoned(tmpdir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Clusters listed in ``$TMPDIR/qt-embedded-owned`` whose recorded owner process is gone (see the
    module docstring). Entries whose cluster or owner record no longer exists are dropped."""
    registry = Path(tmpdir or tempfile.gettempdir()) / OWNED_REGISTRY
    out = []
    for entry in sorted(registry.glob("*")) if registry.is_dir() else []:
        try:
            pgdata = Path(entry.read_text().strip())
            pid, _, start = (pgdata / OWNER_PID_FILE).read_text().strip().partition(" ")
        except OSError:
            with contextlib.suppress(OSError):
                entry.unlink()
            continue
        now = _process_start(int(pid)) if pid.isdigit() else None
        if now is None or (start and now and now != start):
            out.append(pgdata)
    return out


def find_orphans(tmpdir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Clusters in ``$TMPDIR`` whose recorded ``QT_DATA_DIR`` no longer points at them (deleted, or reset
    to another cluster). Clusters without an owner record are left alone (not ours to judge)."""
    root = Path(tmpdir or tempfile.gettempdir())
    out = []
    for real in sorted(root.glob(CLUSTER_PREFIX + "*")):
        try:
            base = Path((real / OWNER_FILE).read_text().strip())
        except OSError:
            continue
        link = base / "postgres"
        try:
            owned = link.is_symlink() and Path(os.readlink(link)) == real
        except OSError:
            owned = False
        if not owned:
            out.append(real)
    return out


def stop_orphans(tmpdir: str | os.PathLike[str] | None = None, *, under: Path | None = None) -> list[Path]:
    """Stop (immediate) and remove every orphaned cluster (see :func:`find_orphans`) and every abandoned one
    (its owner process is gone, :func:`find_abandoned`); with ``under``, also
    every cluster whose ``QT_DATA_DIR`` lies below that directory (a test session's temp root). Returns
    the clusters removed."""
    root = Path(tmpdir or tempfile.gettempdir())
    victims = set(find_orphans(root)) | set(find_abandoned(root))
    if under is not None:
        under = under.resolve()
        for real in root.glob(CLUSTER_PREFIX + "*"):
            with contextlib.suppress(OSError):
                base = Path((real / OWNER_FILE).read_text().strip())
                if base == under or under in base.parents:
                    victims.add(real)
    bindir = _pg_bin_dir()
    removed = []
    for real in sorted(victims):
        try:
            if bindir is not None:
                _discard_orphan(real, bindir)
            removed.append(real)
            with contextlib.suppress(OSError):
                (root / OWNED_REGISTRY / hashlib.sha1(str(real).encode()).hexdigest()[:16]).unlink()
        except EmbeddedPostgresError as exc:
            log.warning("%s", exc)
    return removed


def _paths(settings: Settings, *, create: bool = False) -> tuple[Path, Path, Path]:
    """``(pgdata, secret file, lock file)``. As root the cluster files live in a directory the
    ``postgres`` user can always reach (``$TMPDIR/qt-embedded-pg-<hash>``, owned by postgres) and
    ``QT_DATA_DIR/postgres`` is a symlink to it: private parents (e.g. pytest's 0700 temp root, which
    pytest re-tightens at every session start) would otherwise lock the server out of its own files."""
    base = settings.data_dir.expanduser().resolve()
    link = base / "postgres"
    secret, lock = base / "postgres.secret", base / "postgres.lock"
    if os.geteuid() != 0 or (link.exists() and not link.is_symlink()):
        return link, secret, lock
    if link.is_symlink():
        return Path(os.readlink(link)), secret, lock
    real = (
        Path(tempfile.gettempdir()) / f"{CLUSTER_PREFIX}{hashlib.sha1(str(base).encode()).hexdigest()[:12]}"
    )
    if create:
        import pwd

        real.mkdir(mode=0o700, exist_ok=True)
        pw = pwd.getpwnam("postgres")
        os.chown(real, pw.pw_uid, pw.pw_gid)
        base.mkdir(parents=True, exist_ok=True)
        link.symlink_to(real, target_is_directory=True)
    return real, secret, lock


def _as_pg_user(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def _socket_dir(pgdata: Path) -> str | None:
    """The unix-socket directory of a running postmaster (``postmaster.pid`` line 5)."""
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()[4].strip() or None
    except (OSError, IndexError):
        return None


def _discard_orphan(real: Path, bindir: Path) -> None:
    """A cluster in ``$TMPDIR`` whose ``QT_DATA_DIR`` (symlink and password file) was deleted: the user
    reset the data directory, so the cluster that belonged to it goes too (stopped first if running)."""
    log.warning(
        "stopping and removing the embedded PostgreSQL cluster %s (its data directory was deleted, or the "
        "process or test session that owned it is gone or ending)",
        real,
    )
    if _postmaster_alive(real):
        _as_pg_user([str(bindir / "pg_ctl"), "-D", str(real), "-m", "immediate", "-w", "stop"], timeout=90)
    shutil.rmtree(real, ignore_errors=True)
    if real.exists():
        raise EmbeddedPostgresError(
            f"could not remove the orphaned embedded PostgreSQL cluster {real}; remove it by hand and retry"
        )


def _reset_password(pgdata: Path, port: int, password: str) -> None:
    """Give the superuser ``password`` over the local socket (``--auth-local=trust``): the cluster
    outlived its password file (``QT_DATA_DIR/postgres.secret`` was deleted); its data is kept."""
    import psycopg2
    from psycopg2 import sql

    sockdir = _socket_dir(pgdata) or str(pgdata)
    try:
        conn = psycopg2.connect(host=sockdir, port=port, user=SUPERUSER, dbname=DATABASE, connect_timeout=10)
        try:
            conn.autocommit = True
            conn.cursor().execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(SUPERUSER), sql.Literal(password))
            )
        finally:
            conn.close()
    except psycopg2.Error as exc:
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL in {pgdata} has lost its password file and the password could not be "
            f"reset over its local socket ({sockdir}): {redact(str(exc).strip())}. Stop it "
            f"(pg_ctl -D {pgdata} stop) and remove that directory to start afresh, or set NEON_DATABASE_URL"
        ) from None
    log.warning("the embedded PostgreSQL in %s had lost its password file; a new password was set", pgdata)


def _postmaster_alive(pgdata: Path) -> bool:
    try:
        pid = int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return False
    return _pid_exists(pid)


def crashed(pgdata: Path) -> bool:
    """True when ``postmaster.pid`` is there but its postmaster is gone (killed, not stopped cleanly)."""
    return (pgdata / "postmaster.pid").exists() and not _postmaster_alive(pgdata)


def rediscover_port(settings: Settings) -> int | None:
    """The port the embedded server of ``settings`` listens on now, restarting it first when its
    postmaster crashed (a cleanly stopped server is left stopped: None). Used on every new connection to
    an embedded server, so a process that was using it survives a crash and a restart by anyone."""
    pgdata, _, _ = _paths(settings)
    port = _running_port(pgdata)
    if port is not None:
        return port
    if crashed(pgdata):
        from sqlalchemy.engine import make_url

        log.warning("the embedded PostgreSQL in %s crashed: restarting it", pgdata)
        return make_url(ensure_embedded_postgres(settings)).port
    return None


def _running_port(pgdata: Path) -> int | None:
    """The port of a live postmaster for ``pgdata`` (from ``postmaster.pid``), or None."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (FileNotFoundError, ValueError, IndexError, PermissionError):
        return None
    if not _pid_exists(pid):
        return None
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return port
    return None


def _make_traversable(path: Path) -> None:
    for parent in list(path.parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _url(password: str, port: int) -> str:
    return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}"


def ensure_embedded_postgres(settings: Settings) -> str:
    """Start (or reuse) the embedded server under ``settings.data_dir / "postgres"``; return its URL."""
    from filelock import FileLock

    _, secret_file, lock_file = _paths(settings)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    stop_orphans()  # servers whose data directory was deleted, or whose owner process is gone, go
    with FileLock(str(lock_file), timeout=120):
        link = settings.data_dir.expanduser().resolve() / "postgres"
        bindir = _pg_bin_dir()
        if bindir is None:
            return _pgserver_url(link)
        real, _, _ = _paths(settings)
        if os.geteuid() == 0 and not link.exists() and not link.is_symlink() and real.exists():
            _discard_orphan(real, bindir)
        pgdata, _, _ = _paths(settings, create=True)
        new_password = not secret_file.exists()
        if not new_password:
            password = secret_file.read_text().strip()
        else:
            password = "qt-" + secrets.token_urlsafe(18)
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
        register_secret(password)

        existing = (pgdata / "PG_VERSION").exists()
        base = settings.data_dir.expanduser().resolve()
        if existing:
            _record_owner(pgdata, base)
            _record_owner_process(pgdata)
        port = _running_port(pgdata)
        if port is not None:
            _port_file(settings).write_text(f"{port}\n")
            log.info("reusing the embedded PostgreSQL in %s (port %d)", pgdata, port)
            if new_password:
                _reset_password(pgdata, port, password)
            return _url(password, port)

        is_root = os.geteuid() == 0
        if not existing:
            if pgdata.exists() and any(pgdata.iterdir()):
                raise EmbeddedPostgresError(
                    f"{pgdata} exists but is not a PostgreSQL data directory; move it away or set QT_DATA_DIR"
                )
            pgdata.mkdir(exist_ok=True)
            pwfile = pgdata.parent / f".qt-pw-{secrets.token_hex(8)}"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            if is_root:
                import pwd

                pw = pwd.getpwnam("postgres")
                _make_traversable(pgdata)
                os.chown(pgdata, pw.pw_uid, pw.pw_gid)
                os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            try:
                out = _as_pg_user(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(pgdata),
                        "-U",
                        SUPERUSER,
                        f"--pwfile={pwfile}",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--no-sync",
                    ]
                )
            finally:
                pwfile.unlink(missing_ok=True)
            if out.returncode == 0:
                _record_owner(pgdata, base)
                _record_owner_process(pgdata)
            if out.returncode != 0:
                raise EmbeddedPostgresError(
                    f"initdb for the embedded PostgreSQL in {pgdata} failed: {out.stderr.strip()[-1500:]}. "
                    "Remove that directory and retry, or set NEON_DATABASE_URL to use an existing server"
                )
        elif is_root:
            _make_traversable(pgdata)

        logfile = pgdata / "server.log"
        sockdir = pgdata if len(str(pgdata)) < 90 else Path("/tmp")
        last_err = ""
        stored = _stored_port(settings)
        for attempt in range(5):
            # the port of the previous start while it is free: clients keep finding the server
            port = stored if attempt == 0 and stored is not None and _port_is_free(stored) else _free_port()
            opts = f"-p {port} -c listen_addresses=127.0.0.1 -k {sockdir}"
            out = _as_pg_user(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(pgdata),
                    "-l",
                    str(logfile),
                    "-o",
                    opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                timeout=90,
            )
            if out.returncode == 0:
                _port_file(settings).write_text(f"{port}\n")
                log.info("started the embedded PostgreSQL in %s on port %d", pgdata, port)
                if new_password and existing:
                    _reset_password(pgdata, port, password)
                return _url(password, port)
            last_err = out.stderr.strip()[-800:]
            with contextlib.suppress(OSError):
                last_err += "\n" + logfile.read_text()[-800:]
            time.sleep(0.2)
        raise EmbeddedPostgresError(
            f"the embedded PostgreSQL in {pgdata} did not start: {last_err}. Check {logfile}, or set "
            "NEON_DATABASE_URL to use an existing server"
        )


def stop_embedded_postgres(settings: Settings, *, mode: str = "fast", remove_data: bool = False) -> bool:
    """Stop the embedded server of ``settings`` if it runs; returns whether one was stopped.
    ``remove_data`` also deletes its data directory (and the password file)."""
    stopped = _stop(settings, mode)
    if remove_data:
        pgdata, secret, _ = _paths(settings)
        link = settings.data_dir.expanduser().resolve() / "postgres"
        shutil.rmtree(pgdata, ignore_errors=True)
        if link.is_symlink():
            link.unlink()
        secret.unlink(missing_ok=True)
        _port_file(settings).unlink(missing_ok=True)
    return stopped


def _stop(settings: Settings, mode: str) -> bool:
    pgdata, _, _ = _paths(settings)
    if _running_port(pgdata) is None:
        if (pgdata.parent / "postgres.pgserver").exists():
            return _pgserver_stop(pgdata)
        return False
    bindir = _pg_bin_dir()
    if bindir is None:
        return _pgserver_stop(pgdata)
    out = _as_pg_user([str(bindir / "pg_ctl"), "-D", str(pgdata), "-m", mode, "-w", "stop"], timeout=90)
    if out.returncode != 0:
        raise EmbeddedPostgresError(f"pg_ctl stop for {pgdata} failed: {out.stderr.strip()[-800:]}")
    return True


def _pgserver_url(pgdata: Path) -> str:
    try:
        import pgserver
    except ImportError:
        raise EmbeddedPostgresError(
            "no PostgreSQL server binaries (initdb/pg_ctl) and no 'pgserver' wheel: install PostgreSQL or "
            "pgserver, or set NEON_DATABASE_URL"
        ) from None
    pgdata.mkdir(parents=True, exist_ok=True)
    (pgdata.parent / "postgres.pgserver").touch()
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    return server.get_uri()


def _pgserver_stop(pgdata: Path) -> bool:
    try:
        import pgserver
    except ImportError:
        return False
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    server.cleanup()
    return True


def embedded_postgres_status(settings: Settings) -> tuple[str | None, str]:
    """``(url, "")`` when the embedded server is running, else ``(None, why not)``; never starts it (a
    health probe must not undo `qt db stop`)."""
    pgdata, secret_file, _ = _paths(settings)
    if (pgdata.parent / "postgres.pgserver").exists() and _pg_bin_dir() is None:
        return ensure_embedded_postgres(settings), ""  # the pgserver wheel: reusing it is its own check
    if not (pgdata / "PG_VERSION").exists():
        return None, (
            f"the embedded PostgreSQL under {pgdata} has not been created yet; it starts with the first run "
            "that uses the central store (e.g. `qt run`)"
        )
    port = _running_port(pgdata)
    if port is None or not secret_file.exists():
        return None, (
            f"the embedded PostgreSQL under {pgdata} is stopped (`qt db stop`, or a reboot); it starts again "
            "with the next run that uses the central store"
        )
    password = secret_file.read_text().strip()
    register_secret(password)
    return _url(password, port), ""
