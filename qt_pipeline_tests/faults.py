"""Real fault injection for tests: a TCP proxy that can cut or break connections, and a throwaway
PostgreSQL server that can be SIGKILLed and restarted.

Nothing here is a mock: :class:`TcpProxy` forwards real bytes between real sockets, and
:class:`ThrowawayPostgres` runs the machine's PostgreSQL binaries (``initdb``/``pg_ctl``) on a free port
with scram-sha-256 authentication over TCP, so a wrong password really fails.

Usage::

    with ThrowawayPostgres() as pg:                     # pg.url has a real superuser password
        proxy = TcpProxy("127.0.0.1", pg.port)
        url = proxy.url_for(pg.url)                     # same URL, through the proxy
        proxy.drop_after_bytes(50_000)                  # the next connection to send >50 kB dies (RST)
        proxy.cut(); proxy.restore()                    # outage: live connections killed, new refused
        proxy.cut("blackhole-all")                      # silence: live AND new connections never answered
        proxy.cut("blackhole-new")                      # live connections work, new ones hang
        pg.kill9(); pg.start()                          # crash and recover the server
        proxy.close()
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy.engine import make_url

PG_BIN = Path(os.environ.get("QT_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))

__all__ = ["PG_BIN", "TcpProxy", "ThrowawayPostgres", "free_port", "stop_process"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen) -> None:
    """Stop a test server started with ``stdin=PIPE``: close its stdin (the harnesses exit on EOF, as
    when this process dies), then SIGTERM, then SIGKILL, each after a bounded wait. SIGTERM first cost
    20 s at every session end: a server doing a smart shutdown waits for its clients to go away."""
    if proc.stdin:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    for signal_it, wait_s in ((None, 10), (proc.terminate, 10), (proc.kill, 10)):
        if proc.poll() is not None:
            return
        if signal_it is not None:
            signal_it()
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def _hard_close(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0) and wake any thread blocked in recv on it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class _Link:
    """One proxied client connection: client socket <-> upstream socket, two pump threads."""

    def __init__(self, proxy: TcpProxy, client: socket.socket, upstream: socket.socket):
        self.proxy = proxy
        self.client = client
        self.upstream = upstream
        self.sent_up = 0  # bytes client -> server
        self.closed = threading.Event()
        self.frozen = threading.Event()  # black-holed: bytes are read and dropped, nothing is answered
        self._lock = threading.Lock()

    def start(self) -> None:
        threading.Thread(target=self._pump, args=(self.client, self.upstream, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.upstream, self.client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upward: bool) -> None:
        try:
            while not self.closed.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if self.frozen.is_set():
                    continue  # swallowed: the peer's kernel acknowledged it, nobody ever answers
                if upward:
                    limit = self.proxy._budget_for(self)
                    if limit is not None and self.sent_up + len(data) > limit:
                        # forward exactly up to the budget, then kill the connection mid-stream
                        head = data[: max(0, limit - self.sent_up)]
                        if head:
                            dst.sendall(head)
                            self.sent_up += len(head)
                        self.proxy._budget_spent(self)
                        break
                    self.sent_up += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self.kill()

    def kill(self) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        _hard_close(self.client)
        _hard_close(self.upstream)
        self.proxy._forget(self)


class TcpProxy:
    """A real threaded TCP proxy on 127.0.0.1 in front of ``target_host:target_port``.

    * ``port`` — the local port to connect to; ``url_for(url)`` rewrites a database URL to go through it.
    * ``cut(mode="refuse")`` — kill every live connection (RST) and refuse new ones (the listening socket
      is closed: clients get "Connection refused"). ``mode="blackhole"`` kills live connections and
      accepts new ones but never answers (clients hit their connect timeout). ``mode="blackhole-new"``
      leaves live connections working and black-holes new ones. ``mode="blackhole-all"`` black-holes
      live connections too: whatever either side sends is swallowed (TCP still acknowledges it, as a
      middlebox that lost its state would), so only a client-side deadline can notice.
    * ``restore()`` — forward again (same port).
    * ``drop_after_bytes(n, once=True)`` — the next connection(s) that send more than ``n`` bytes
      client→server (counted from the moment of the call for live connections, from the start for new
      ones) are killed after exactly ``n`` bytes were forwarded; with ``once`` only the first one.
    * ``close()`` — stop everything.
    """

    def __init__(self, target_host: str, target_port: int, *, listen_port: int = 0):
        self.target = (target_host, int(target_port))
        self._links: set[_Link] = set()
        self._lock = threading.Lock()
        self._mode = "forward"  # forward | refuse | blackhole
        self._blackholed: list[socket.socket] = []
        self._budget: int | None = None
        self._budget_once = True
        self._budget_base: dict[_Link, int] = {}
        self.kills = 0  # connections killed by drop_after_bytes
        self.accepted = 0
        self._closing = False
        self._listener: socket.socket | None = None
        self.port = listen_port
        self._listen()

    # --- listener ------------------------------------------------------------------------------------
    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self.port = s.getsockname()[1]
        self._listener = s
        threading.Thread(target=self._accept_loop, args=(s,), daemon=True).start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # listener closed
            with self._lock:
                mode = self._mode
                self.accepted += 1
            if mode == "blackhole":
                with self._lock:
                    self._blackholed.append(client)
                continue
            if mode == "refuse":
                _hard_close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                _hard_close(client)
                continue
            link = _Link(self, client, upstream)
            with self._lock:
                self._links.add(link)
                if self._budget is not None:
                    self._budget_base[link] = 0
            link.start()

    # --- public API ----------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return "127.0.0.1"

    def url_for(self, url: str) -> str:
        """``url`` (a SQLAlchemy/libpq URL) with host and port replaced by this proxy's."""
        u = make_url(url).set(host="127.0.0.1", port=self.port)
        return u.render_as_string(hide_password=False)

    @property
    def live_connections(self) -> int:
        with self._lock:
            return len(self._links)

    CUT_MODES = ("refuse", "blackhole", "blackhole-new", "blackhole-all")

    def cut(self, mode: str = "refuse") -> None:
        if mode not in self.CUT_MODES:
            raise ValueError(f"cut mode must be one of {self.CUT_MODES}, not {mode!r}")
        with self._lock:
            self._mode = "blackhole" if mode.startswith("blackhole") else mode
            links = list(self._links)
            listener = self._listener if mode == "refuse" else None
            if listener is not None:
                self._listener = None
        if listener is not None:
            _close_listener(listener)
        for link in links:
            if mode == "blackhole-all":
                link.frozen.set()
            elif mode != "blackhole-new":
                link.kill()

    def restore(self) -> None:
        with self._lock:
            self._mode = "forward"
            held, self._blackholed = self._blackholed, []
            need_listener = self._listener is None and not self._closing
            frozen = [link for link in self._links if link.frozen.is_set()]
        for s in held:
            _hard_close(s)
        for link in frozen:  # their protocol state is lost (bytes were swallowed): the network "resets" them
            link.kill()
        if need_listener:
            deadline = time.monotonic() + 10
            while True:
                try:
                    self._listen()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def drop_after_bytes(self, n: int, *, once: bool = True) -> None:
        with self._lock:
            self._budget = int(n)
            self._budget_once = once
            self._budget_base = {link: link.sent_up for link in self._links}

    def clear_faults(self) -> None:
        with self._lock:
            self._budget = None
            self._budget_base = {}

    def close(self) -> None:
        with self._lock:
            self._closing = True
            listener, self._listener = self._listener, None
            links = list(self._links)
            held, self._blackholed = self._blackholed, []
        if listener is not None:
            _close_listener(listener)
        for link in links:
            link.kill()
        for s in held:
            _hard_close(s)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals used by _Link ---------------------------------------------------------------------
    def _budget_for(self, link: _Link) -> int | None:
        with self._lock:
            if self._budget is None or link not in self._budget_base:
                return None
            return self._budget_base[link] + self._budget

    def _budget_spent(self, link: _Link) -> None:
        with self._lock:
            self.kills += 1
            if self._budget_once:
                self._budget = None
                self._budget_base = {}

    def _forget(self, link: _Link) -> None:
        with self._lock:
            self._links.discard(link)
            self._budget_base.pop(link, None)


class ThrowawayPostgres:
    """A real PostgreSQL server for one test, on a free port, password-protected over TCP.

    ``initdb`` runs as the ``postgres`` OS user (``pg_ctl`` refuses root) with ``--auth-host=scram-sha-256``
    and a superuser ``postgres`` whose password is random (``.password``). Local (unix socket) access is
    trust. ``.url`` is ``postgresql://postgres:<password>@127.0.0.1:<port>/postgres``.
    """

    def __init__(self, *, port: int | None = None, superuser: str = "postgres", password: str | None = None):
        self.superuser = superuser
        self.password = password or "tp-" + secrets.token_hex(12)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.root = Path(tempfile.mkdtemp(prefix="qt-throwaway-pg-"))
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self._pw = pwd.getpwnam("postgres")
        self._initialised = False

    # --- helpers -------------------------------------------------------------------------------------
    def _as_postgres(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            log = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({out.returncode}): {out.stderr.strip()[-2000:]}\n{log}"
            )
        return out

    def url_for(
        self, user: str | None = None, password: str | None = None, database: str = "postgres"
    ) -> str:
        user = user or self.superuser
        password = self.password if password is None else password
        return f"postgresql://{user}:{password}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for()

    @property
    def postmaster_pid(self) -> int | None:
        pidfile = self.data_dir / "postmaster.pid"
        try:
            return int(pidfile.read_text().splitlines()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    # --- lifecycle -----------------------------------------------------------------------------------
    def init(self) -> None:
        if self._initialised:
            return
        os.chown(self.root, self._pw.pw_uid, self._pw.pw_gid)
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chown(pwfile, self._pw.pw_uid, self._pw.pw_gid)
        pwfile.chmod(0o600)
        self._as_postgres(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.superuser,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        pwfile.unlink()
        self._initialised = True

    def start(self) -> None:
        self.init()
        opts = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c full_page_writes=off -c shared_buffers=32MB -c max_connections=40"
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self._as_postgres(
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_file),
                    "-o",
                    opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                    timeout=90,
                )
                return
            except RuntimeError:
                # after kill9 orphaned backends may still hold shared memory for a moment
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def stop(self, mode: str = "fast") -> None:
        if self.postmaster_pid is None:
            return
        with contextlib.suppress(RuntimeError):
            self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def kill9(self) -> None:
        """SIGKILL the postmaster (a crash) and wait until its backends are gone too."""
        pid = self.postmaster_pid
        if pid is None:
            return
        children: list[int] = []
        with contextlib.suppress(FileNotFoundError, OSError):
            import psutil

            children = [c.pid for c in psutil.Process(pid).children(recursive=True)]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for p in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 15
        for p in [pid, *children]:
            while time.monotonic() < deadline and _alive(p):
                time.sleep(0.05)

    def close(self) -> None:
        self.stop("immediate")
        if self.postmaster_pid is not None and _alive(self.postmaster_pid):
            self.kill9()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        try:
            self.start()
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _close_listener(listener: socket.socket) -> None:
    # shutdown() wakes a thread blocked in accept() and stops the kernel from completing new handshakes
    with contextlib.suppress(OSError):
        listener.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        listener.close()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie counts as gone
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
