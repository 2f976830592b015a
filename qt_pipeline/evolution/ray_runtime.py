"""The Ray runtime of one evolution run: a driver process that dies with its owner, and a reaper.

Why a separate driver process. A Ray driver is a process with a core worker bound to the local raylet; when
that raylet dies (killed, out of memory) Ray ends the *whole driver process* (it exits, code 0, after
printing the raylet's log) — measured on Ray 2.60. Were the driver the Dagster run process, the run would
vanish without a cause and stay ``running`` for good. So :class:`~qt_pipeline.evolution.ray_eval.RayEvaluator`
runs Ray in a child process (``python -m qt_pipeline.evolution.ray_runtime``) and talks to it over a
socket: a dead Ray becomes a dead child, which the owner notices within a second and reports as a
one-line :class:`~qt_pipeline.evolution.ray_eval.EvaluatorError`.

Why a reaper. ``ray.init`` starts gcs_server, raylet and log monitor processes that die with the driver
(:func:`init_local_ray` leaves out the head processes a run never uses), but the raylet's children
(``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) outlive a ``kill -9`` of the driver for minutes (measured). Every process of a session started here carries
``QT_RAY_SESSION=<id>`` in its environment (inherited from the driver process, and kept by Ray's workers
and agents even though they rewrite their command line), so :func:`reap_session` finds all of them. Each
session is recorded in ``QT_DATA_DIR/ray/sessions/<id>.json`` with its owner's pid and start time; it is
reaped

* by the driver process itself as soon as its owner is gone (it polls its parent every 0.25 s),
* by the owner when the driver process exits or is closed,
* by the next :func:`reap_orphans` (every Ray start of an evaluator, every ``qt`` command) when both were
  killed at once.

A session connected to an existing cluster (an address) starts no local Ray processes, so there is nothing
to reap on the cluster; only the driver process is owned.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SESSION_ENV = "QT_RAY_SESSION"
# Ray's start-up deadlines, raised for loaded machines (defaults for what is not already set): the raylet
# aborts when its dashboard agent has not written its port file within agent_register_timeout_ms (measured:
# > 15 s at load 6 on 2 cores, ray-project/ray#65983), and drops workers slower than
# worker_register_timeout_seconds to register.
SLOW_MACHINE_ENV = {"RAY_agent_register_timeout_ms": "120000", "RAY_worker_register_timeout_seconds": "180"}
# Defaults of an evaluator's driver process (for what is not already set): the budgets above, and a dead local
# raylet found in ~5 s instead of ~15 s. Ray ends the driver only once its GCS has marked the node dead, after
# health_check_failure_threshold (5) failed health checks health_check_period_ms apart (default 3000); a
# killed raylet fails each check at once (connection refused), while a live but busy one still has
# health_check_timeout_ms (10 s, unchanged) to answer each check.
DRIVER_ENV = {**SLOW_MACHINE_ENV, "RAY_health_check_period_ms": "1000"}

# Head processes that ``ray.init`` starts for a local Ray and that a run's private Ray never uses (methods of
# ray._private.node.Node): the API server process ("dashboard"; started even with include_dashboard=False,
# for the job and state APIs and usage reports, and waited for before the raylet starts) and the autoscaler
# monitor (nothing to scale on one local node). Not starting them cut ray.init of a local Ray from ~11 s to
# ~7 s and its shutdown from ~1.5 s to ~0.5 s (2-core VM, one core busy; 4 CPU-seconds less). gcs_server,
# the raylet and its agents, the log monitor (workers' output in the driver log) and the workers start as
# before.
UNUSED_HEAD_PROCESSES = ("start_api_server", "start_monitor")
# Ray's periodic observability work that a run's private local Ray has no reader for (no dashboard is
# started and nothing scrapes its metrics), made rarer or off: its processes wake up on the same cores
# the evaluation computes on. Defaults for what is not already set, in force while ``ray.init`` starts the
# node (its processes, and the workers the raylet starts later, inherit them); not with the dashboard, and
# never for a cluster. Measured on 2 cores (bench_evolution, 4 runs each, alternated): a Ray generation
# took 3.0% longer than the same kernel in process, against 4.5% with Ray's defaults; steady speedup
# (median of paired rounds) 1.84-1.90x against 1.77-1.86x.
QUIET_LOCAL_ENV = {
    "RAY_task_events_report_interval_ms": "0",  # task events (State API, dashboard, timeline): not recorded
    "RAY_metrics_report_interval_ms": "60000",  # every process's metrics export: every minute, not 10 s
    "REPORTER_UPDATE_INTERVAL_MS": "60000",  # the agent's node and process stats: every minute, not 5 s
    "RAY_memory_monitor_refresh_ms": "1000",  # the raylet's out-of-memory check: every 1 s, not 250 ms
}


@contextlib.contextmanager
def _without_head_processes(names: tuple[str, ...]) -> Iterator[None]:
    from ray._private.node import Node

    saved = {name: getattr(Node, name) for name in names if hasattr(Node, name)}
    for name in saved:  # (another Ray version without one of them: that part starts as Ray would)
        setattr(Node, name, _not_started)
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(Node, name, method)


def _not_started(self: Any, *args: Any, **kwargs: Any) -> None:
    return None


@contextlib.contextmanager
def _env_defaults(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment where a name is not set, for the duration only."""
    added = [name for name in values if name not in os.environ]
    os.environ.update({name: values[name] for name in added})
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def init_local_ray(num_cpus: int, temp_dir: str | None = None, **init_kwargs: Any) -> Any:
    """``ray.init`` of a local single-node Ray in this process, without the head processes no run uses
    (:data:`UNUSED_HEAD_PROCESSES`; the API server is started when ``include_dashboard=True`` asks for it)
    and, without the dashboard, with Ray's observability reporting made quiet (:data:`QUIET_LOCAL_ENV`);
    ``init_kwargs`` go to ``ray.init``."""
    import logging

    import ray

    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING, **init_kwargs}
    if temp_dir is not None:
        kwargs["_temp_dir"] = temp_dir
    unused: tuple[str, ...] = UNUSED_HEAD_PROCESSES
    quiet = QUIET_LOCAL_ENV
    if kwargs["include_dashboard"]:  # asked for: started, and reported to, as Ray does
        unused = tuple(n for n in unused if n != "start_api_server")
        quiet = {}
    with _without_head_processes(unused), _env_defaults(quiet):
        return ray.init(num_cpus=num_cpus, **kwargs)


def _sessions_dir(data_dir: Path | None = None) -> Path:
    if data_dir is None:
        from qt_pipeline.config import get_settings

        data_dir = Path(get_settings().data_dir)
    return Path(data_dir) / "ray" / "sessions"


def new_session_id() -> str:
    return f"qtr{os.getpid()}-{uuid.uuid4().hex[:8]}"


def session_temp_dir(session_id: str) -> Path:
    """Ray's session directory for a local Ray of this session. Short and under /tmp on purpose: Ray puts
    Unix sockets there (108-byte path limit), and the data dir may be anywhere."""
    return Path("/tmp") / session_id


def pack_for_driver(obj: Any, session_id: str) -> tuple[str, bytes, list[tuple[int, int]]]:
    """``obj`` for the driver process without sending its arrays through the pipe: pickled (protocol 5)
    with the large buffers (the bars) out of band, written to one file in the session's directory
    (removed with the session, :func:`reap_session`), which the driver maps (:func:`unpack_in_driver`).
    Returns (file, pickle, the buffers' byte ranges in the file). Through the pipe, a 500k-bar dataset
    took 80-90 ms to reach the object store, most of a cold generation's overhead."""
    import pickle
    import tempfile

    bufs: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    folder = session_temp_dir(session_id)
    folder.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix="data-", dir=folder)
    spans, off = [], 0
    try:
        with os.fdopen(fd, "wb") as f:
            for b in bufs:
                raw = b.raw()
                f.write(raw)
                spans.append((off, off + raw.nbytes))
                off += raw.nbytes
    except BaseException:
        os.unlink(path)
        raise
    return path, payload, spans


def unpack_in_driver(path: str, payload: bytes, spans: list[tuple[int, int]]) -> Any:
    """The object :func:`pack_for_driver` wrote: its arrays are read-only views of the mapped file."""
    import mmap
    import pickle

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        view = memoryview(mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) if size else b"")
    return pickle.loads(payload, buffers=[view[a:b] for a, b in spans])


def _create_time(pid: int) -> float | None:
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _alive(pid: int, create_time: float | None) -> bool:
    """The process ``pid`` that started at ``create_time`` still runs (not a zombie, not a reused pid)."""
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(p.create_time() - create_time) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def session_processes(session_id: str, *, exclude: tuple[int, ...] = ()) -> list[Any]:
    """Every live process of this user whose environment says it belongs to ``session_id``."""
    import psutil

    me = os.getuid()
    found = []
    for p in psutil.process_iter(["pid", "uids"]):
        try:
            if p.pid in exclude or p.info["uids"] is None or p.info["uids"].real != me:
                continue
            if p.environ().get(SESSION_ENV) == session_id and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
    return found


def reap_session(session_id: str, *, exclude: tuple[int, ...] = (), timeout_s: float = 10.0) -> int:
    """SIGKILL every process of the session (found by its environment) and remove its Ray temp dir.
    Returns how many processes were killed."""
    import psutil

    procs = session_processes(session_id, exclude=exclude)
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            p.kill()
    psutil.wait_procs(procs, timeout=timeout_s)
    shutil.rmtree(session_temp_dir(session_id), ignore_errors=True)
    return len(procs)


def record_session(session_id: str, data_dir: Path | None = None) -> Path:
    path = _sessions_dir(data_dir) / f"{session_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"session": session_id, "owner_pid": os.getpid(), "owner_started": _create_time(os.getpid())}
    path.write_text(json.dumps(record))
    return path


def forget_session(record: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        record.unlink()


def reap_orphans(data_dir: Path | None = None) -> list[str]:
    """Reap every recorded session whose owner process is gone; returns their ids."""
    reaped = []
    root = _sessions_dir(data_dir)
    for path in sorted(root.glob("*.json")) if root.is_dir() else []:
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            forget_session(path)
            continue
        if _alive(int(rec["owner_pid"]), rec.get("owner_started")):
            continue
        reap_session(str(rec["session"]))
        forget_session(path)
        reaped.append(str(rec["session"]))
    return reaped


def reap_orphans_quietly() -> None:
    """:func:`reap_orphans` for every ``qt`` command: cheap when nothing is recorded, never fails the
    command (a bad configuration is reported by the command itself)."""
    try:
        root = _sessions_dir()
        if root.is_dir() and any(root.glob("*.json")):
            reap_orphans(root.parent.parent)
    except Exception:  # pragma: no cover - best effort
        pass


# ---------------------------------------------------------------- the driver process


def _watch_parent(parent: int, session_id: str) -> None:
    """Runs in the driver process: when the owner is gone (kill -9 included), take the session down."""
    while True:
        if os.getppid() != parent:
            reap_session(session_id, exclude=(os.getpid(),), timeout_s=5.0)
            os._exit(3)
        time.sleep(0.25)


def _serve(conn: Any) -> None:
    import logging

    from qt_pipeline.evolution.ray_eval import EvaluatorError, RayPool, _one_line

    pool: RayPool | None = None
    owns_ray = False
    while True:
        try:
            cmd, arg = conn.recv()
        except (EOFError, OSError):
            break  # the owner closed the connection (or died): shut down
        try:
            if cmd == "start":
                import ray

                t0 = time.perf_counter()
                if arg["address"]:
                    ray.init(address=arg["address"], logging_level=logging.WARNING, **arg["init_kwargs"])
                else:
                    init_local_ray(arg["num_cpus"], arg["temp_dir"], **arg["init_kwargs"])
                owns_ray = True
                pool = RayPool(**arg["pool"])
                pool.start_actors()  # the workers come up and warm while the run loads its data
                reply: Any = {"startup_seconds": time.perf_counter() - t0}
            elif cmd == "set_data":
                assert pool is not None
                pool.set_data(*unpack_in_driver(*arg))  # (put into the object store: copied out of the file)
                reply = pool.put_seconds
            elif cmd == "wait_ready":
                assert pool is not None
                pool.wait_ready()
                reply = None
            elif cmd == "evaluate":
                assert pool is not None
                reply = pool.evaluate(arg)
            elif cmd == "stats":
                reply = pool.stats() if pool is not None else {}
            elif cmd == "close":
                if pool is not None:
                    pool.close()
                conn.send(("ok", None))
                break
            else:  # pragma: no cover - a programming error in the owner
                raise EvaluatorError(f"unknown driver command {cmd!r}")
            conn.send(("ok", reply))
        except Exception as exc:
            conn.send(("err", _one_line(exc)))
    if owns_ray:
        import ray

        ray.shutdown()


def _preload() -> None:
    """Import what unpickling the run's bar data needs (the backtester, Numba: ~3 s on 2 cores) while Ray
    starts, which mostly waits on its own processes; otherwise the first ``set_data`` pays it."""
    with contextlib.suppress(Exception):  # the real import at set_data reports any error
        import qt_pipeline.evolution.validation  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """``python -m qt_pipeline.evolution.ray_runtime FD PARENT_PID SESSION``: serve one RayEvaluator."""
    from multiprocessing.connection import Connection

    fd, parent, session_id = (argv or sys.argv[1:])[:3]
    if os.getppid() != int(parent):  # the owner died while we started
        sys.exit(3)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the owner, which closes us
    threading.Thread(target=_watch_parent, args=(int(parent), session_id), daemon=True).start()
    threading.Thread(target=_preload, daemon=True).start()
    conn = Connection(int(fd))
    try:
        _serve(conn)
    finally:
        conn.close()


if __name__ == "__main__":
    main()
